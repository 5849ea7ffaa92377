"""Stage `generate`: draw the Table S2 plan of test taxa with TaxaGuide (resumable, multi-process).

Outputs (docs/architecture.md): ``<out>/plan.csv``, ``manifest.csv``, ``<class>/<taxon>/<index:04d>.png``
(and ``settings.json``: what the images were drawn with; a run with other settings starts over, once the
new model has loaded). One run per output folder: a second one stops with the pid of the first.
Run: ``python stages/generate.py [--params params.yaml] [--model models/<generate.target_level>]
[--prepared data/prepared] [--out data/generated]``. It starts one worker per GPU itself (params.yaml
``compute.processes``, taxadiffusion/core/launch.py); the workers share the images (rank r draws every N-th pending
image), and the images are the same however many there are.
"""

from __future__ import annotations

import logging
import time

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.sampling.generate import generate


def main(args, params) -> None:
    start = time.perf_counter()
    model = args.model or f"models/{params.generate.target_level}"
    summary = generate(params.generate, params.sampling, params.experiment, model, args.prepared, args.out)
    if "stale_removed" in summary:  # rank 0 only
        seconds = time.perf_counter() - start
        logging.info(
            "generate: %d taxa, %d images (%d drawn by this process, %d already there) in %.1f s; capped classes: %s",
            summary["taxa"], summary["images"], summary["drawn_here"], summary["images"] - summary["pending"],
            seconds, ", ".join(summary["capped_classes"]) or "none",
        )


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="trained level (default: models/<generate.target_level>)")
    parser.add_argument("--prepared", default="data/prepared", help="prepared table (default: data/prepared)")
    parser.add_argument("--out", default="data/generated", help="output folder (default: data/generated)")
    run_stage(main, parser, workers=True)
