"""Stage `synthesize`: write the built-in synthetic taxonomy world to ``synthesize.out``.

Outputs (docs/architecture.md): annotations.csv, images/<class>/<file>.png, world.json.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python stages/synthesize.py`

from taxadiffusion.cli import run_stage, stage_parser  # noqa: E402
from taxadiffusion.synthetic import write_dataset  # noqa: E402


def main(args, params) -> None:
    summary = write_dataset(params.synthesize)
    logging.info("synthesize: %s", json.dumps(summary))


if __name__ == "__main__":
    run_stage(main, stage_parser(__doc__.splitlines()[0]))
