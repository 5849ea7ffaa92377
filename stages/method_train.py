"""Stage `method_train@<m>`: train one baseline or ablation model (taxadiffusion/comparison/train.py).

    python stages/method_train.py --method lora --out models/methods/lora --shards data/shards \\
        --latents data/latents --scratch scratch/train/methods/lora --log-dir metrics/train/methods/lora
"""

from __future__ import annotations

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.comparison.train import train_method
from taxadiffusion.training.train import TrainPaths


def main(args, params) -> None:
    paths = TrainPaths(parent=None, out=args.out, shards=args.shards, latents=args.latents, scratch=args.scratch,
                       log_dir=args.log_dir)
    train_method(args.method, params.train, params.experiment, paths, params.compute)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, help="one of params.yaml's methods")
    parser.add_argument("--out", required=True, help="the method's model folder (models/methods/<m>)")
    parser.add_argument("--shards", required=True, help="WebDataset shards (data/shards)")
    parser.add_argument("--latents", required=True, help="cached latents (data/latents)")
    parser.add_argument("--scratch", required=True, help="resumable step checkpoints (scratch/train/methods/<m>)")
    parser.add_argument("--log-dir", required=True, help="training curves + run.json (metrics/train/methods/<m>)")
    run_stage(main, parser, workers=True)
