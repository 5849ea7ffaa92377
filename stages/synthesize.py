"""Stage `synthesize`: write the built-in synthetic taxonomy world (the embedded default dataset).

Outputs (docs/architecture.md): ``<out>/annotations.csv``, ``images/<class>/<file>.png``, ``world.json``.
Run: ``python stages/synthesize.py [--params params.yaml] [--out data/synthetic]``
"""

from __future__ import annotations

import json
import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.data.synthesize import write_dataset


def main(args, params) -> None:
    summary = write_dataset(params.synthesize, args.out)
    logging.info("synthesize: %s", json.dumps(summary))


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/synthetic", help="output folder (default: data/synthetic)")
    run_stage(main, parser)
