"""Stage `train@<level>`: progressive training of one taxonomic level (see taxadiffusion/training.py).

    python stages/train.py --level class
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no stages/train.py --level class
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taxadiffusion.cli import run_stage, stage_parser  # noqa: E402
from taxadiffusion.training import progressive_spec, train  # noqa: E402


def main(args, params):
    spec = progressive_spec(params, args.level)
    summary = train(params, spec, models_dir=args.models, shards=args.shards, latents_dir=args.latents,
                    log_dir=args.log_dir or f"metrics/train/{spec.name}", max_steps_this_run=args.max_steps_this_run)
    print(summary)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--level", required=True, help="taxonomic level to train (a key of params.yaml `levels`)")
    parser.add_argument("--models", default="models")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--latents", default="data/latents")
    parser.add_argument("--log-dir", default=None, help="training curves (default: metrics/train/<level>)")
    parser.add_argument("--max-steps-this-run", type=int, default=None, help="stop after this many steps (resume tests)")
    run_stage(main, parser)
