"""Stage `prepare`: read the dataset's annotation file, filter, check images, split per species.

Outputs (docs/architecture.md): ``<out>/table.parquet``, ``taxonomy.json``, ``report.json``.
Run: ``python stages/prepare.py [--params params.yaml] [--out data/prepared]``
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.data.prepare import prepare


def main(args, params) -> None:
    report = prepare(params.dataset, params.prepare, params.level_names, args.out)
    logging.info(
        "prepare: %d rows in, %d kept (train %d, test %d, %d species); dropped %s",
        report["rows_in"], report["rows_kept"], report["splits"]["train"], report["splits"]["test"],
        report["species"]["total"], report["dropped"] or "none",
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/prepared", help="output folder (default: data/prepared)")
    run_stage(main, parser)
