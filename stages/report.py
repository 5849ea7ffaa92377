"""Stage `report`: one self-contained HTML page (tables, bar charts, sample grids) from ``metrics/``.

Outputs (docs/architecture.md): ``reports/index.html`` (images embedded; opens offline).
Run: ``python stages/report.py [--params params.yaml] [--metrics metrics] [--out reports/index.html]``
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/report.py`

from taxadiffusion.cli import run_stage, stage_parser  # noqa: E402
from taxadiffusion.report import build_report  # noqa: E402


def main(args, params) -> None:
    logging.info("report: wrote %s", build_report(args.metrics, args.out))


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--metrics", default="metrics", help="evaluate outputs (default: metrics)")
    parser.add_argument("--out", default="reports/index.html", help="HTML file (default: reports/index.html)")
    run_stage(main, parser)
