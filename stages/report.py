"""Stage `report`: one self-contained HTML page that says what was run and shows its tables and figures.

Outputs (docs/architecture.md): ``reports/index.html`` (images embedded; opens offline). Optional inputs that
are missing (training logs, previews, figures, sweep, methods) become a note in their section.
Run: ``python stages/report.py [--params params.yaml] [--metrics metrics] [--figures figures]
[--train-logs metrics/train] [--prepared-report data/prepared/report.json] [--out reports/index.html]``
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.report.build import build_report, run_info


def main(args, params) -> None:
    run = run_info(params.dataset, params.model, params.train, params.level_names, params.seed)
    out = build_report(args.metrics, args.out, figures_dir=args.figures, train_dir=args.train_logs,
                       prepared_report=args.prepared_report, run=run)
    logging.info("report: wrote %s", out)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--metrics", default="metrics", help="evaluate outputs (default: metrics)")
    parser.add_argument("--figures", default="figures", help="figures stage output (default: figures)")
    parser.add_argument("--train-logs", default="metrics/train", help="training logs (default: metrics/train)")
    parser.add_argument("--prepared-report", default="data/prepared/report.json",
                        help="prepare's row accounting (default: data/prepared/report.json)")
    parser.add_argument("--out", default="reports/index.html", help="HTML file (default: reports/index.html)")
    run_stage(main, parser)
