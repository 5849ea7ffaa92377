"""Dataset readers: one annotation format in, one normalised table out.

Every reader takes the ``dataset`` params section and the ordered level names and returns a
:class:`pandas.DataFrame` with

- ``path``: image path relative to ``dataset.images`` (``<NA>`` when the row names no image),
- one string column per level (``<NA>`` when the rank is missing: empty, or one of ``dataset.na_values``
  such as R's ``NA`` or BIOSCAN's ``not_classified``; ``prepare`` keeps such a row as a partial lineage
  when only levels below ``prepare.finest_required`` are missing, else drops it and counts the reason),
- ``row``: 1-based data-row number in the annotation file (header not counted; for iNat the
  1-based index in ``annotations``),
- optionally ``bbox_x, bbox_y, bbox_w, bbox_h`` (pixels, top-left origin; NaN when unknown),

plus a :class:`Drops` holding rows the reader itself had to skip (counted, with example rows).
Names come out stripped only; ``prepare`` normalises them, so all formats share one set of rules.
A file that cannot be read at all is a one-line :class:`UserError` naming file, row and column.

Formats (docs/datasets.md §1, docs/method.md §4), one module each: :mod:`.fishnet` (FishNet CSV),
:mod:`.bioscan1m` (BIOSCAN-1M TSV), :mod:`.inat2021` (COCO-style JSON), :mod:`.table` (any CSV/TSV/Parquet
+ ``dataset.columns``, and ``synthetic``: ``table`` with the fixed map of ``data/synthetic/annotations.csv``).
Shared machinery: :mod:`.tabular` (CSV/TSV/Parquet files, their errors), :mod:`.fields` (column helpers),
:mod:`.drops` (counted skips).
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from taxadiffusion.config import DatasetConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.readers.bioscan1m import BIOSCAN_FILENAMES, BIOSCAN_RANKS, find_bioscan_metadata, read_bioscan1m
from taxadiffusion.data.readers.drops import BBOX_COLUMNS, Drops
from taxadiffusion.data.readers.fields import load_bbox_json
from taxadiffusion.data.readers.fishnet import FISHNET_COLUMNS, FISHNET_HEADER, read_fishnet
from taxadiffusion.data.readers.inat2021 import INAT_RANKS, read_inat2021
from taxadiffusion.data.readers.table import SYNTHETIC_COLUMNS, read_synthetic, read_table
from taxadiffusion.data.readers.tabular import read_any_table, read_delimited, read_parquet_columns

__all__ = [
    "BBOX_COLUMNS", "BIOSCAN_FILENAMES", "BIOSCAN_RANKS", "FISHNET_COLUMNS", "FISHNET_HEADER", "INAT_RANKS",
    "READERS", "SYNTHETIC_COLUMNS", "Drops", "find_bioscan_metadata", "load_bbox_json", "read_any_table",
    "read_dataset", "read_delimited", "read_parquet_columns",
]

READERS: dict[str, Callable[[DatasetConfig, list[str], Drops], pd.DataFrame]] = {
    "fishnet": read_fishnet,
    "bioscan1m": read_bioscan1m,
    "inat2021": read_inat2021,
    "table": read_table,
    "synthetic": read_synthetic,
}


def read_dataset(cfg: DatasetConfig, levels: list[str], max_examples: int = 20) -> tuple[pd.DataFrame, Drops]:
    """Dispatch on ``dataset.name``; returns the normalised table and the reader's counted drops."""
    reader = READERS.get(cfg.name)
    if reader is None:
        raise UserError(f"params.yaml: dataset.name {cfg.name!r} is not one of {sorted(READERS)}")
    drops = Drops(max_examples)
    df = reader(cfg, list(levels), drops)
    for lv in levels:
        df[lv] = df[lv].astype("string")
    df["path"] = df["path"].astype("string")
    return df, drops
