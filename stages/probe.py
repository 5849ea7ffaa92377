"""Stage `probe`: train the small taxonomy classifier used as the always-available evaluation backbone.

Outputs (docs/architecture.md): ``<out>/probe.safetensors`` + ``config.json`` (levels, class names, resolution,
feature dim, training settings, per-level top-1 on the real test split).
Run: ``python stages/probe.py [--params params.yaml] [--shards data/shards] [--out models/probe]``
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.metrics.probe import fit_probe_on_shards


def main(args, params) -> None:
    config = fit_probe_on_shards(args.shards, args.out, params.level_names, params.probe, params.seed)
    logging.info("probe: %d train images, %d steps -> %s", config["train"]["n_images"], config["train"]["steps"],
                 args.out)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/shards", help="WebDataset shards (default: data/shards)")
    parser.add_argument("--out", default="models/probe", help="output folder (default: models/probe)")
    run_stage(main, parser)
