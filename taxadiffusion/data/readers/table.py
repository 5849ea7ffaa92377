"""Any CSV / TSV / Parquet with a ``dataset.columns`` map (``table``), and the built-in synthetic world's
``annotations.csv`` (``synthetic``: ``table`` with a fixed map)."""

from __future__ import annotations

import pandas as pd

from taxadiffusion.config import DatasetConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.readers.drops import BBOX_COLUMNS, Drops
from taxadiffusion.data.readers.fields import finish, is_url, text
from taxadiffusion.data.readers.tabular import read_any_table

# data/synthetic/annotations.csv (docs/architecture.md, `synthesize` contract).
SYNTHETIC_COLUMNS = {"image": "image", "class": "class", "order": "order", "family": "family", "genus": "genus",
                     "species": "species"}


def _column_map(columns: dict, levels: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """(image column, level -> column, the bbox keys mapped); unknown keys and a partial bbox are errors."""
    allowed = {"image", *levels, *BBOX_COLUMNS}
    unknown = sorted(set(columns) - allowed)
    if unknown:
        raise UserError(f"params.yaml: dataset.columns has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    bbox_keys = [k for k in BBOX_COLUMNS if k in columns]
    if bbox_keys and len(bbox_keys) != 4:
        raise UserError(f"params.yaml: dataset.columns maps {bbox_keys}; map all of {BBOX_COLUMNS} or none")
    return str(columns.get("image", "image")), {lv: str(columns.get(lv, lv)) for lv in levels}, bbox_keys


def read_table(cfg: DatasetConfig, levels: list[str], drops: Drops, columns: dict | None = None) -> pd.DataFrame:
    """Any CSV / TSV / Parquet; ``dataset.columns`` maps ``{level | image | bbox_x.. : column}``.

    Unmapped levels and ``image`` default to a column of the same name. An image given as a URL
    (``https://``, ``s3://`` ...) is a counted drop ``image_url``: images are never downloaded.
    """
    columns = dict(cfg.columns if columns is None else columns)
    image_col, level_cols, bbox_keys = _column_map(columns, levels)
    raw = read_any_table(cfg.metadata, [image_col, *level_cols.values(), *(str(columns[k]) for k in bbox_keys)])
    df = pd.DataFrame({"row": raw["row"]})
    df["path"] = text(raw[image_col], cfg)
    for lv, col in level_cols.items():
        df[lv] = text(raw[col], cfg)
    for k in bbox_keys:
        df[k] = pd.to_numeric(raw[str(columns[k])], errors="coerce").astype("float64")
    out = finish(df, levels, bool(bbox_keys))
    url = is_url(out["path"])
    drops.add("image_url", out[url])
    return out[~url].reset_index(drop=True)


def read_synthetic(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """The built-in synthetic world's ``annotations.csv``: the ``table`` reader with its fixed map."""
    columns = {k: v for k, v in SYNTHETIC_COLUMNS.items() if k in levels or k == "image"}
    return read_table(cfg, levels, drops, columns=columns)
