"""Stage `compare`: <out>/methods.csv / .md, one row per method of params.yaml `methods`.

    python stages/compare.py --methods-dir metrics/methods --out metrics
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.comparison.table import TableSetting, compare


def main(args, params) -> None:
    setting = TableSetting(params.dataset.name, params.dataset.resolution, params.model.preset,
                           params.model.pretrained, params.train.steps)
    table = compare(params.methods, params.level_names, args.methods_dir, args.out, setting)
    logging.info("%s", table.to_string(index=False))


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--methods-dir", default="metrics/methods",
                        help="per-method summaries <dir>/<m>/summary.json (default: metrics/methods)")
    parser.add_argument("--out", default="metrics", help="folder of methods.csv / methods.md (default: metrics)")
    run_stage(main, parser)
