"""Stage `evaluate`: FID / LPIPS / BioCLIP per class (Table S2) and probe metrics of the generated images.

Outputs (docs/architecture.md), ``<group>`` being ``evaluate.group_level`` (class: Table S2): ``headline.json``
(the DVC metrics), ``<out>/<group>/*.json`` (the per-group rows), ``summary.json``, ``<group>_metrics.csv/.md``,
``level_metrics.csv/.md``, ``rarity_metrics.csv/.md``, ``plots/*.csv`` and ``plots/grids/<taxon>.png``;
real-image features cached in ``--cache``. The logic is :mod:`taxadiffusion.metrics.evaluate`.
Run: ``python stages/evaluate.py [--params params.yaml] [--shards data/shards] [--generated data/generated]
[--probe models/probe] [--out metrics] [--cache data/features]``
"""

from __future__ import annotations

import logging
from pathlib import Path

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate


def main(args, params) -> None:
    paths = EvaluatePaths(shards=Path(args.shards), generated=Path(args.generated), probe=Path(args.probe),
                          out=Path(args.out), cache=Path(args.cache))
    summary = evaluate(params.evaluate, params.level_names, paths)
    for name, values in summary["overall"].items():
        shown = {k: v for k, v in values.items() if not isinstance(v, dict)}
        logging.info("evaluate: %s %s", name, shown)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--shards", default="data/shards", help="WebDataset shards (default: data/shards)")
    parser.add_argument("--generated", default="data/generated",
                        help="generated images + manifest.csv (default: data/generated)")
    parser.add_argument("--probe", default="models/probe", help="trained probe (default: models/probe)")
    parser.add_argument("--out", default="metrics", help="output folder (default: metrics)")
    parser.add_argument("--cache", default="data/features", help="real-feature cache (default: data/features)")
    run_stage(main, parser)
