"""Stage `method@<m>`: train / generate / evaluate one baseline or ablation (taxadiffusion/methods.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taxadiffusion.cli import run_stage, stage_parser  # noqa: E402
from taxadiffusion.methods import run_method  # noqa: E402


def main(args, params):
    run_method(params, args.method)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    run_stage(main, parser)
