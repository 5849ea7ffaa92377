"""Stage `compare`: metrics/methods.csv / .md, one row per method of params.yaml `methods`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taxadiffusion.cli import run_stage, stage_parser  # noqa: E402
from taxadiffusion.methods import compare  # noqa: E402


def main(args, params):
    print(compare(params).to_string(index=False))


if __name__ == "__main__":
    run_stage(main, stage_parser(__doc__.splitlines()[0]))
