"""Stages `method_train@<m>` / `method@<m>`: one baseline or ablation row (taxadiffusion/methods.py).

    python stages/method.py --method lora --step train --out models/methods/lora --shards data/shards \\
        --latents data/latents --scratch scratch/train/methods/lora --log-dir metrics/train/methods/lora
    python stages/method.py --method lora --step sample --model models/methods/lora --final models/species \\
        --prepared data/prepared --shards data/shards --probe models/probe --main-summary metrics/summary.json \\
        --cache data/features --images data/methods/lora --out metrics/methods/lora
"""

from __future__ import annotations

from pathlib import Path

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.errors import UserError
from taxadiffusion.methods import SamplePaths, sample_method, train_method

STEP_ARGS = {
    "train": ("out", "shards", "latents", "scratch", "log_dir"),
    "sample": ("model", "final", "prepared", "shards", "probe", "main_summary", "cache", "images", "out"),
}


def main(args, params) -> None:
    missing = ["--" + name.replace("_", "-") for name in STEP_ARGS[args.step] if getattr(args, name) is None]
    if missing:
        raise UserError(f"stages/method.py --step {args.step}: missing {' '.join(missing)}")
    if args.step == "train":
        train_method(args.method, params.train, model_cfg=params.model, levels=params.level_names, seed=params.seed,
                     out_dir=args.out, shards=args.shards, latents_dir=args.latents, scratch=args.scratch,
                     log_dir=args.log_dir)
    else:
        paths = SamplePaths(**{name: Path(getattr(args, name)) for name in STEP_ARGS["sample"]})
        sample_method(args.method, generate_cfg=params.generate, sampling=params.sampling,
                      evaluate_cfg=params.evaluate, model_cfg=params.model, levels=params.level_names,
                      seed=params.seed, paths=paths)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--step", choices=sorted(STEP_ARGS), required=True,
                        help="train: method_train@<m> (the method's model); sample: method@<m> (generate + evaluate)")
    for name, help_text in [
        ("--out", "train: the method's model folder; sample: its metrics folder"),
        ("--shards", "WebDataset shards"), ("--latents", "train: cached latents"),
        ("--scratch", "train: resumable step checkpoints"), ("--log-dir", "train: training curves + run.json"),
        ("--model", "sample: the method's model folder"), ("--final", "sample: the main pipeline's final level"),
        ("--prepared", "sample: the prepared table"), ("--probe", "sample: the trained probe"),
        ("--main-summary", "sample: the main pipeline's metrics/summary.json"),
        ("--cache", "sample: real-image feature cache"), ("--images", "sample: the generated images"),
    ]:
        parser.add_argument(name, default=None, help=help_text)
    run_stage(main, parser)
