"""Stage `train@<level>`: progressive training of one taxonomic level (see taxadiffusion/training/train.py).

    python stages/train.py --level class --parent models/base --out models/class --shards data/shards \\
        --latents data/latents --scratch scratch/train/class --log-dir metrics/train/class

It starts one worker per GPU itself (params.yaml `compute.processes`, taxadiffusion/core/launch.py); the global
batch `train.batch_size` is the same however many there are. ``--parent`` is the folder of the level's parent
(``levels.<level>.parent`` in params.yaml); level 0's is ``models/base``, which holds no trained level: level 0
starts from the base model.
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.core.launch import is_main_worker
from taxadiffusion.training.specs import progressive_spec
from taxadiffusion.training.train import TrainPaths, train


def main(args, params) -> None:
    spec = progressive_spec(params.train, params.level_names, args.level)
    paths = TrainPaths(parent=args.parent, out=args.out, shards=args.shards, latents=args.latents,
                       scratch=args.scratch, log_dir=args.log_dir)
    summary = train(params.train, spec, params.experiment, paths, params.compute, params.preview,
                    args.max_steps_this_run)
    if is_main_worker():  # one line, not one per worker
        logging.info("train %s: %s", spec.name, summary)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--level", required=True, help="taxonomic level to train (a key of params.yaml `levels`)")
    parser.add_argument("--parent", required=True, help="the parent level's folder (level 0: models/base)")
    parser.add_argument("--out", required=True, help="the level's folder (models/<level>)")
    parser.add_argument("--shards", default="data/shards", help="WebDataset shards (default: data/shards)")
    parser.add_argument("--latents", default="data/latents", help="cached latents (default: data/latents)")
    parser.add_argument("--scratch", required=True, help="resumable step checkpoints (scratch/train/<level>)")
    parser.add_argument("--log-dir", required=True, help="training curves + run.json (metrics/train/<level>)")
    parser.add_argument("--max-steps-this-run", type=int, default=None,
                        help="stop after this many steps (resume tests)")
    run_stage(main, parser, workers=True)
