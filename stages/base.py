"""Stage `base`: resolve and verify the base model (tiny: shipped weights + hashes; sd15: load once and
cache the VAE posteriors of the training images in latent chunks). Writes <out>/base.json and <latents>/.

    python stages/base.py --shards data/shards --out models/base --latents data/latents

It starts one worker per GPU itself (params.yaml `compute.processes`, taxadiffusion/core/launch.py): the workers
share the encode (each writes its chunks; the files are those of one process).
"""

from __future__ import annotations

import logging

from accelerate import PartialState

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.core.device import on_cpu_only
from taxadiffusion.training.base import prepare_base


def main(args, params) -> None:
    # Several processes (torchrun / accelerate launch) share the VAE encode; cpu=True on a CPU-only machine, or
    # accelerate leaves its ranks as independent processes (docs/install.md "Measured stack behaviour").
    state = PartialState(cpu=on_cpu_only())
    info = prepare_base(params.model, args.out, args.shards, args.latents, resolution=params.dataset.resolution,
                        device=state.device, state=state)
    if state.is_main_process:
        logging.info("base: %s", {k: v for k, v in info.items() if k not in ("files", "recipe")})


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/shards", help="WebDataset shards (default: data/shards)")
    parser.add_argument("--out", default="models/base", help="output folder (default: models/base)")
    parser.add_argument("--latents", default="data/latents", help="latent cache folder (default: data/latents)")
    run_stage(main, parser, workers=True)
