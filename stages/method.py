"""Stages `method_train@<m>` / `method@<m>`: one baseline or ablation row (taxadiffusion/methods.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taxadiffusion.cli import run_stage, stage_parser  # noqa: E402
from taxadiffusion.methods import sample_method, train_method  # noqa: E402


def main(args, params):
    if args.step == "train":
        train_method(params, args.method)
    else:
        sample_method(params, args.method)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--step", choices=["train", "sample"], default="sample",
                        help="train: method_train@<m> (models/methods/<m>); sample: method@<m> (generate + evaluate)")
    run_stage(main, parser)
