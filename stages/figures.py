"""Stage `figures`: the supplement's Figs. S2 (embeddings), S5 (guidance scales), S6 (attention per level).

Outputs (docs/figures.md): ``<out>/fig_s2_embeddings.png``, ``fig_s5_guidance.png``, ``fig_s6_attention.png``,
``figures.json``. Drawn from the final trained level with the run's sampling settings.
Run: ``python stages/figures.py [--params params.yaml] [--model models/<generate.target_level>]
[--prepared data/prepared] [--shards data/shards] [--out figures] [--device auto]``
"""

from __future__ import annotations

import logging
import time

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.figures.build import FigurePaths, make_figures


def main(args, params) -> None:
    start = time.perf_counter()
    target = params.generate.target_level
    model = args.model or f"models/{target}"
    paths = FigurePaths(model=model, prepared=args.prepared, shards=args.shards, out=args.out)
    make_figures(params.figures, params.sampling, params.experiment, target, paths, device=args.device)
    logging.info("figures: wrote %s in %.1f s", args.out, time.perf_counter() - start)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="trained level (default: models/<generate.target_level>)")
    parser.add_argument("--prepared", default="data/prepared", help="prepared table (default: data/prepared)")
    parser.add_argument("--shards", default="data/shards", help="real images (default: data/shards)")
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    run_stage(main, parser)
