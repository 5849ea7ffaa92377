"""Column helpers shared by the readers: level -> column maps, missing values, image paths, bounding boxes."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from taxadiffusion.config import DatasetConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json
from taxadiffusion.data.readers.drops import BBOX_COLUMNS
from taxadiffusion.data.readers.tabular import check_file

# `scheme://...`: an image the table only links to (http, https, s3, gs, ftp, file ...); never downloaded.
URL_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*://"


def level_map(levels: list[str], defaults: dict[str, str], overrides: dict, dataset: str) -> dict[str, str]:
    """level -> column: ``dataset.columns`` overrides the format's defaults (e.g. FishNet ``order: NewOrder``)."""
    out = {}
    for lv in levels:
        col = overrides.get(lv, defaults.get(lv))
        if col is None:
            known = ", ".join(sorted(defaults))
            raise UserError(
                f"params.yaml: level {lv!r} has no column in the {dataset} annotations (known levels: {known}); "
                f"map it with dataset.columns.{lv}"
            )
        out[lv] = str(col)
    return out


def strip(s: pd.Series) -> pd.Series:
    return s.astype("string").str.strip().replace("", pd.NA)


def text(s: pd.Series, cfg: DatasetConfig) -> pd.Series:
    """Stripped text with ``dataset.na_values`` (``NA``, ``nan``, ``not_classified`` ...) and ``""`` -> NA.

    Used for rank and image columns, so R's ``NA`` is never a genus named "NA".
    """
    out = strip(s)
    na = [v.strip() for v in cfg.na_values if v.strip()]
    return out.mask(out.isin(na)) if na else out


def basename(s: pd.Series) -> pd.Series:
    """Last path / URL component (FishNet ``image`` may be ``https://www.fishbase.se/images/species/X.jpg``)."""
    return s.str.rsplit("/", n=1).str[-1].replace("", pd.NA)


def image_id(base: pd.Series) -> pd.Series:
    """FishNet bbox key: the file name (see :func:`basename`) without its extension (docs/method.md §4)."""
    return base.str.replace(r"\.[^.]*$", "", regex=True)


def is_url(s: pd.Series):
    """True where the text is a URL (``http://``, ``s3://``, ``gs://`` ...), as a numpy bool array."""
    return s.str.contains(URL_PATTERN, regex=True).fillna(False).to_numpy(dtype=bool)


def load_bbox_json(path: str | Path) -> dict[str, tuple[float, float, float, float]]:
    """``{image_id: {x, y, w, h}}`` -> ``{image_id: (x, y, w, h)}``; a malformed entry is a one-line error."""
    path = Path(path)
    check_file(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object {{image_id: {{x, y, w, h}}}}, got {type(data).__name__}")
    out = {}
    for key, box in data.items():
        if not isinstance(box, dict) or any(k not in box for k in "xywh"):
            raise UserError(f"{path}: entry {key!r}: expected an object with keys x, y, w, h, got {box!r:.80}")
        try:
            out[str(key)] = tuple(float(box[k]) for k in "xywh")
        except (TypeError, ValueError):
            raise UserError(f"{path}: entry {key!r}: x, y, w, h must be numbers, got {box!r:.80}") from None
    return out


def attach_bbox(df: pd.DataFrame, image_ids: pd.Series, boxes: dict) -> None:
    for i, col in enumerate(BBOX_COLUMNS):
        df[col] = image_ids.map(lambda k, i=i: boxes[k][i] if k in boxes else math.nan).astype("float64")


def finish(df: pd.DataFrame, levels: list[str], with_bbox: bool) -> pd.DataFrame:
    cols = ["path", *levels, "row"] + (BBOX_COLUMNS if with_bbox else [])
    return df[cols].reset_index(drop=True)
