"""Stage `shard`: preprocess the prepared images into WebDataset tar shards.

Outputs (docs/architecture.md): ``<out>/{train,test}/shard-%06d.tar`` and ``<out>/index.json``.
Run: ``python stages/shard.py [--params params.yaml] [--prepared data/prepared] [--out data/shards]``
"""

from __future__ import annotations

import logging

from taxadiffusion.cli import run_stage, stage_parser
from taxadiffusion.data.shard import write_shards


def main(args, params) -> None:
    index = write_shards(params.dataset, params.shard, params.level_names, args.prepared, args.out)
    logging.info(
        "shard: train %d images in %d shards, test %d images in %d shards, %dpx %s",
        index["train"]["count"], len(index["train"]["shards"]), index["test"]["count"],
        len(index["test"]["shards"]), index["resolution"], index["preprocess"],
    )


if __name__ == "__main__":
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--prepared", default="data/prepared", help="prepare's output folder (default: data/prepared)")
    parser.add_argument("--out", default="data/shards", help="output folder (default: data/shards)")
    run_stage(main, parser)
