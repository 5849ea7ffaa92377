"""Stage `base`: resolve and verify the base model (tiny: shipped weights + hashes; sd15: load once and
cache the VAE posteriors of the training images in latent chunks). Writes <out>/base.json and <latents>/.

    python stages/base.py --shards data/shards --out models/base --latents data/latents
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.core.device import default_device
from taxadiffusion.training.base import prepare_base


def main(args, params) -> None:
    info = prepare_base(params.model, args.out, args.shards, args.latents, resolution=params.dataset.resolution,
                        device=default_device())
    logging.info("base: %s", {k: v for k, v in info.items() if k not in ("files", "recipe")})


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/shards", help="WebDataset shards (default: data/shards)")
    parser.add_argument("--out", default="models/base", help="output folder (default: models/base)")
    parser.add_argument("--latents", default="data/latents", help="latent cache folder (default: data/latents)")
    run_stage(main, parser)
