"""Stage `method@<m>`: generate and evaluate one baseline or ablation row (taxadiffusion/comparison/sample.py).

    python stages/method.py --method lora --model models/methods/lora --final models/species \\
        --prepared data/prepared --shards data/shards --probe models/probe --main-summary metrics/summary.json \\
        --cache data/features --images data/methods/lora --out metrics/methods/lora
"""

from __future__ import annotations

from pathlib import Path

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.comparison.sample import SamplePaths, sample_method

ARGS = {  # --name: help (SamplePaths' fields)
    "model": "the method's model folder (models/methods/<m>)",
    "final": "the main pipeline's final level (models/<last level>)",
    "prepared": "the prepared table (data/prepared)",
    "shards": "WebDataset shards (data/shards)",
    "probe": "the trained probe (models/probe)",
    "main_summary": "the main pipeline's metrics/summary.json",
    "cache": "real-image feature cache (data/features)",
    "images": "the method's generated images (data/methods/<m>)",
    "out": "the method's metrics folder (metrics/methods/<m>)",
}


def main(args, params) -> None:
    paths = SamplePaths(**{name: Path(getattr(args, name)) for name in ARGS})
    sample_method(args.method, params.generate, params.sampling, params.evaluate, params.experiment, paths)


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, help="one of params.yaml's methods")
    for name, help_text in ARGS.items():
        parser.add_argument("--" + name.replace("_", "-"), required=True, help=help_text)
    run_stage(main, parser)
