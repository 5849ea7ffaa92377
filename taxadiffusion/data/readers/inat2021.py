"""iNaturalist 2021 COCO-style ``train.json`` / ``val.json`` (docs/method.md §4, docs/datasets.md §1d)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from taxadiffusion.config import DatasetConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.readers.drops import Drops
from taxadiffusion.data.readers.fields import finish, text
from taxadiffusion.data.readers.tabular import check_file

# category keys usable as levels; `species` is built as "genus specific_epithet".
INAT_RANKS = ["kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet"]


def _load_json(path: Path):
    """The parsed file; bad JSON or a byte that is not UTF-8 is a one-line error naming line and column."""
    raw = path.read_bytes()
    try:
        data = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise UserError(f"{path}: line {line} column {column}: not UTF-8 text (byte 0x{raw[exc.start]:02X}); "
                        "save the file as UTF-8") from None
    del raw
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})") from None


def _inat_frame(path: Path, data: dict, key: str, fields: list[str]) -> pd.DataFrame:
    items = data.get(key)
    if not isinstance(items, list):
        raise UserError(f"{path}: missing list {key!r} (expected COCO-style iNat2021 JSON)")
    if not items:
        raise UserError(f"{path}: {key!r} is empty")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UserError(f"{path}: {key}[{i}] (row {i + 1}): expected an object, got {type(item).__name__}")
        for f in fields:
            if f not in item:
                raise UserError(f"{path}: {key}[{i}] (row {i + 1}): missing field {f!r}")
    return pd.DataFrame({f: [item[f] for item in items] for f in fields})


def _category_fields(cfg: DatasetConfig, levels: list[str]) -> tuple[list[str], list[str]]:
    """(levels read from a category field, the category fields to read)."""
    ranks = [lv for lv in levels if lv != "species"]
    known = set(INAT_RANKS) | set(cfg.columns)
    unknown = [lv for lv in ranks if lv not in known]
    if unknown:
        raise UserError(f"params.yaml: level(s) {unknown} are not iNat2021 category fields ({', '.join(INAT_RANKS)})")
    fields = [cfg.columns.get(lv, lv) for lv in ranks]
    if "species" in levels:
        fields += [cfg.columns.get("genus", "genus"), "specific_epithet"]
    return ranks, list(dict.fromkeys(fields))


def read_inat2021(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """One row per annotation; ``species`` = ``genus + " " + specific_epithet`` (the contract's binomial;
    the official code conditions on the epithet alone, ``train.species_text: epithet`` in the iNat preset,
    docs/method.md §1.2); JSON ``null`` and
    ``dataset.na_values`` are missing ranks."""
    path = Path(cfg.metadata)
    check_file(path)
    ranks, cat_fields = _category_fields(cfg, levels)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object with images, annotations, categories")
    images = _inat_frame(path, data, "images", ["id", "file_name"])
    anns = _inat_frame(path, data, "annotations", ["image_id", "category_id"])
    cats = _inat_frame(path, data, "categories", ["id", *cat_fields])
    anns["row"] = np.arange(1, len(anns) + 1, dtype=np.int64)

    images = images.drop_duplicates("id").rename(columns={"id": "image_id"})
    cats = cats.drop_duplicates("id").rename(columns={"id": "category_id"})
    df = anns.merge(images, on="image_id", how="left", validate="many_to_one")
    df = df.merge(cats, on="category_id", how="left", validate="many_to_one", indicator="_cat")
    df["path"] = text(df["file_name"], cfg)
    for lv in ranks:
        df[lv] = text(df[cfg.columns.get(lv, lv)], cfg)
    if "species" in levels:
        df["species"] = text(df[cfg.columns.get("genus", "genus")], cfg) + " " + text(df["specific_epithet"], cfg)
    out = finish(df, levels, False)
    unknown_image = df["file_name"].isna().to_numpy()
    unknown_cat = (df["_cat"] == "left_only").to_numpy() & ~unknown_image
    drops.add("unknown_image_id", out[unknown_image])
    drops.add("unknown_category_id", out[unknown_cat])
    return out[~(unknown_image | unknown_cat)].reset_index(drop=True)
