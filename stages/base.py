"""Stage `base`: resolve and verify the base model (tiny: shipped weights + hashes; sd15: load once and
cache the VAE latents of the training images). Writes models/base/base.json."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taxadiffusion.cli import run_stage, stage_parser  # noqa: E402
from taxadiffusion.models.base import prepare_base  # noqa: E402


def main(args, params):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = prepare_base(params.model, args.out, shards=args.shards, latents_dir=args.latents, device=device)
    print({k: v for k, v in info.items() if k not in ("files", "recipe")})


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default="models/base")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--latents", default="data/latents")
    run_stage(main, parser)
