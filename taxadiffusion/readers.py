"""Dataset readers: one annotation format in, one normalised table out.

Every reader takes the ``dataset`` params section and the ordered level names and returns a
:class:`pandas.DataFrame` with

- ``path``: image path relative to ``dataset.images`` (``<NA>`` when the row names no image),
- one string column per level (``<NA>`` when the rank is missing; ``prepare`` drops such rows and
  counts the reason),
- ``row``: 1-based data-row number in the annotation file (header not counted; for iNat the
  1-based index in ``annotations``),
- optionally ``bbox_x, bbox_y, bbox_w, bbox_h`` (pixels, top-left origin; NaN when unknown),

plus a :class:`Drops` holding rows the reader itself had to skip (counted, with example rows).
Names come out raw (only stripped); ``prepare`` normalises them, so all formats share one set of
rules. A file that cannot be read at all is a one-line :class:`UserError` naming file, row and column.

Formats (docs/ecosystem.md §1, method.md §4): ``fishnet`` (FishNet CSV), ``bioscan1m`` (BIOSCAN-1M
TSV), ``inat2021`` (COCO-style JSON), ``table`` (any CSV/TSV/Parquet + ``dataset.columns``) and
``synthetic`` (``table`` with the fixed map of ``data/synthetic/annotations.csv``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .config import DatasetConfig
from .errors import UserError
from .io import read_json

BBOX_COLUMNS = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
_MAX_HEADER_SHOWN = 12

# FishNet: level -> CSV column (method.md §4; `species` is the binomial and is lower-case in the header).
FISHNET_COLUMNS = {
    "superclass": "SuperClass",
    "class": "Class",
    "order": "Order",
    "family": "Family",
    "subfamily": "Subfamily",
    "genus": "Genus",
    "species": "species",
}
FISHNET_HEADER = (
    ",Unnamed: 0,species,image,SpecCode,Genus,Subfamily,Family,Order,Class,SuperClass,source,Folder,Troph,"
    "FeedingPath,Tropical,Temperate,Subtropical,Boreal,Polar,freshwater,saltwater,brackish,NewOrder,Frequency"
).split(",")

# BIOSCAN-1M: the rank columns carry the level name itself; both published file names are accepted
# (docs/ecosystem.md §1a: the zahrag README says "1M_", Zenodo and the file-ID map do not).
BIOSCAN_RANKS = ["phylum", "class", "order", "family", "subfamily", "tribe", "genus", "species", "subspecies"]
BIOSCAN_FILENAMES = ["BIOSCAN_Insect_Dataset_metadata.tsv", "BIOSCAN_1M_Insect_Dataset_metadata.tsv"]
BIOSCAN_MISSING = "not_classified"

# iNat2021 category keys usable as levels; `species` is built as "genus specific_epithet".
INAT_RANKS = ["kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet"]

# data/synthetic/annotations.csv (docs/architecture.md, `synthesize` contract).
SYNTHETIC_COLUMNS = {"image": "image", "class": "class", "order": "order", "family": "family", "genus": "genus",
                     "species": "species"}


class Drops:
    """Rows skipped on purpose: ``{reason: count}`` plus up to ``max_examples`` example rows per reason.

    Every skip goes through :meth:`add`, so ``report.json`` can prove
    ``rows_in == rows_kept + sum(dropped.values())``.
    """

    def __init__(self, max_examples: int = 20):
        self.max_examples = max(0, int(max_examples))
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[dict]] = {}

    def add(self, reason: str, rows: pd.DataFrame, detail: pd.Series | None = None) -> None:
        if len(rows) == 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + int(len(rows))
        shown = self.examples.setdefault(reason, [])
        room = self.max_examples - len(shown)
        if room <= 0:
            return
        head = rows.head(room)
        for i, record in enumerate(head.to_dict("records")):
            clean = {"row": _json_value(record.get("row"))}  # the row number first: what a user looks up
            clean.update({k: _json_value(v) for k, v in record.items()
                          if k != "row" and not (k in BBOX_COLUMNS and _is_missing(v))})
            if detail is not None:
                clean["detail"] = _json_value(detail.loc[head.index[i]])
            shown.append(clean)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _is_missing(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _json_value(v):
    if _is_missing(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


# --------------------------------------------------------------------------------------------------
# Delimited text files (CSV / TSV): header checked with the csv module, body parsed by pyarrow
# (multithreaded, only the needed columns, every column pinned to string).


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: file not found (set dataset.metadata)")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an annotation file (set dataset.metadata)")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (expected a header line and data rows)")


def _csv_reader(f, delimiter: str, quoted: bool):
    if quoted:
        return csv.reader(f, delimiter=delimiter)
    return csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE)


def _read_header(path: Path, delimiter: str, quoted: bool) -> list[str]:
    csv.field_size_limit(2**31 - 1)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for header in _csv_reader(f, delimiter, quoted):
                if header:
                    return header
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: line 1 (header): not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: line 1 (header): {exc}") from None
    raise UserError(f"{path}: file is empty (expected a header line and data rows)")


def _find_bad_row(path: Path, delimiter: str, quoted: bool, n_fields: int) -> tuple[int, int, int] | None:
    """(data row, line, fields) of the first row whose field count differs from the header's.

    Only runs on the error path: pyarrow reports the bad row's text but, when parsing in parallel,
    not its number.
    """
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = _csv_reader(f, delimiter, quoted)
        data_row = -1  # the header is row 0
        for fields in reader:
            if not fields:  # blank lines are skipped, as pyarrow does
                continue
            data_row += 1
            if data_row > 0 and len(fields) != n_fields:
                return data_row, reader.line_num, len(fields)
    return None


def _missing_columns_error(path: Path, missing: list[str], header: list[str], hint: str = "") -> UserError:
    shown = ", ".join(repr(h) for h in header[:_MAX_HEADER_SHOWN])
    more = f", ... ({len(header)} in all)" if len(header) > _MAX_HEADER_SHOWN else ""
    which = ", ".join(repr(m) for m in missing)
    return UserError(f"{path}: line 1 (header): missing required column(s) {which}{hint}; the header has {shown}{more}")


def read_delimited(
    path: str | Path,
    columns: list[str],
    *,
    delimiter: str,
    quoted: bool = True,
    null_values: tuple[str, ...] = ("",),
    hint: str = "",
) -> pd.DataFrame:
    """Read ``columns`` (all as strings; ``null_values`` -> NA) plus ``row`` from a CSV/TSV file.

    Errors are one line naming the file and the header line / data row: empty file, missing
    column, a row with a field count different from the header's, text that is not UTF-8.
    """
    path = Path(path)
    _check_file(path)
    header = _read_header(path, delimiter, quoted)
    wanted = list(dict.fromkeys(columns))
    missing = [c for c in wanted if c not in header]
    if missing:
        raise _missing_columns_error(path, missing, header, hint)

    bad: list = []

    def on_bad_row(row) -> str:
        bad.append(row)
        return "skip"  # keep going to count them all; raised below with the first row's number

    parse = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoted else False,
        newlines_in_values=quoted,
        invalid_row_handler=on_bad_row,
    )
    convert = pacsv.ConvertOptions(
        include_columns=wanted,
        column_types={c: pa.string() for c in wanted},
        null_values=list(null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(path, parse_options=parse, convert_options=convert,
                               read_options=pacsv.ReadOptions(block_size=16 << 20))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot parse the file: {first}") from None
    if bad:
        where = _find_bad_row(path, delimiter, quoted, len(header))
        more = f" ({len(bad) - 1} more such rows)" if len(bad) > 1 else ""
        if where is not None:
            row, line, n = where
            raise UserError(
                f"{path}: data row {row} (line {line}): {n} fields, but the header has {len(header)}{more}"
            )
        first = bad[0]
        raise UserError(
            f"{path}: a row has {first.actual_columns} fields, but the header has {first.expected_columns}"
            f"{more}: {first.text[:80]!r}"
        )
    if table.num_rows == 0:
        raise UserError(f"{path}: has a header but no data rows")
    df = table.to_pandas()
    df["row"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df


def read_parquet_columns(path: str | Path, columns: list[str], hint: str = "") -> pd.DataFrame:
    path = Path(path)
    _check_file(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    names = pf.schema_arrow.names
    wanted = list(dict.fromkeys(columns))
    missing = [c for c in wanted if c not in names]
    if missing:
        raise _missing_columns_error(path, missing, names, hint)
    table = pf.read(columns=wanted)
    if table.num_rows == 0:
        raise UserError(f"{path}: has no data rows")
    out = {}
    for c in wanted:
        col = table.column(c)
        try:
            col = col.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise UserError(f"{path}: column {c!r} has type {col.type}, which cannot be read as text") from None
        out[c] = col
    df = pa.table(out).to_pandas()
    df["row"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df


def read_any_table(path: str | Path, columns: list[str], hint: str = "") -> pd.DataFrame:
    """CSV / TSV / Parquet chosen by the file extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return read_parquet_columns(path, columns, hint)
    if suffix == ".csv":
        return read_delimited(path, columns, delimiter=",", hint=hint)
    if suffix in (".tsv", ".tab", ".txt"):
        return read_delimited(path, columns, delimiter="\t", hint=hint)
    raise UserError(f"{path}: unknown table format {path.suffix!r} (use .csv, .tsv or .parquet)")


# --------------------------------------------------------------------------------------------------
# Helpers shared by the readers


def _level_map(levels: list[str], defaults: dict[str, str], overrides: dict, dataset: str) -> dict[str, str]:
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


def _strip(s: pd.Series) -> pd.Series:
    return s.astype("string").str.strip().replace("", pd.NA)


def _basename(s: pd.Series) -> pd.Series:
    """Last path / URL component (FishNet ``image`` may be ``https://www.fishbase.se/images/species/X.jpg``)."""
    return _strip(s).str.rsplit("/", n=1).str[-1].replace("", pd.NA)


def _image_id(s: pd.Series) -> pd.Series:
    """FishNet bbox key: file name without URL prefix and extension (method.md §4)."""
    base = _basename(s)
    return base.str.replace(r"\.[^.]*$", "", regex=True)


def load_bbox_json(path: str | Path) -> dict[str, tuple[float, float, float, float]]:
    """``{image_id: {x, y, w, h}}`` -> ``{image_id: (x, y, w, h)}``; a malformed entry is a one-line error."""
    path = Path(path)
    _check_file(path)
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


def _attach_bbox(df: pd.DataFrame, image_ids: pd.Series, boxes: dict) -> None:
    for i, col in enumerate(BBOX_COLUMNS):
        df[col] = image_ids.map(lambda k, i=i: boxes[k][i] if k in boxes else math.nan).astype("float64")


def _finish(df: pd.DataFrame, levels: list[str], with_bbox: bool) -> pd.DataFrame:
    cols = ["path", *levels, "row"] + (BBOX_COLUMNS if with_bbox else [])
    return df[cols].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# The readers


def read_fishnet(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """FishNet CSV (method.md §4, docs/ecosystem.md §1b).

    Image path ``<Folder>/<basename(image)>``; ``species`` is empty on ``source=inat`` rows (``prepare``
    counts them as ``missing_species``); ``Actinopteri``/``Actinopterygii`` are unified by
    ``dataset.synonyms`` in ``prepare``; names such as ``Perciformes/Scorpaenoidei`` are kept verbatim.
    """
    level_cols = _level_map(levels, FISHNET_COLUMNS, cfg.columns, "FishNet")
    raw = read_delimited(cfg.metadata, ["image", "Folder", *level_cols.values()], delimiter=",",
                         hint=" (FishNet CSV header: ,Unnamed: 0,species,image,...,Folder,...)")
    df = pd.DataFrame({"row": raw["row"]})
    folder, base = _strip(raw["Folder"]), _basename(raw["image"])
    df["path"] = folder + "/" + base
    for lv, col in level_cols.items():
        df[lv] = raw[col]
    if cfg.bbox_json:
        _attach_bbox(df, _image_id(raw["image"]), load_bbox_json(cfg.bbox_json))
    return _finish(df, levels, bool(cfg.bbox_json))


def find_bioscan_metadata(metadata: str | Path) -> Path:
    """``dataset.metadata`` may be the TSV under either published name or the folder holding it."""
    path = Path(metadata)
    if path.is_dir():
        for name in BIOSCAN_FILENAMES:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: folder holds neither {' nor '.join(BIOSCAN_FILENAMES)} (set dataset.metadata)")
    if not path.exists() and path.name in BIOSCAN_FILENAMES:
        for name in BIOSCAN_FILENAMES:
            if (path.parent / name).is_file():
                return path.parent / name
    return path


def read_bioscan1m(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """BIOSCAN-1M ``BIOSCAN_Insect_Dataset_metadata.tsv`` (docs/ecosystem.md §1a).

    Tab-separated without quoting (the authors' own reader uses ``QUOTE_NONE``); only the needed
    columns are converted, all as strings. Missing ranks are the literal ``not_classified`` (-> NA).
    The image is ``<root>/part<chunk_number>/<image_file>``. Keeping only complete class..species
    lineages (``prepare``) should leave 84,443 records of the real 1,128,313-row file, as in the
    supplement (B.2); that cannot be checked without the file. Unlike ``bioscan-dataset``'s loader we
    do not fill a missing ``genus`` from the species' first word, to match the paper's filter.
    """
    path = find_bioscan_metadata(cfg.metadata)
    level_cols = _level_map(levels, {r: r for r in BIOSCAN_RANKS}, cfg.columns, "BIOSCAN-1M")
    raw = read_delimited(path, ["image_file", "chunk_number", *level_cols.values()], delimiter="\t", quoted=False,
                         null_values=("", BIOSCAN_MISSING), hint=" (BIOSCAN-1M metadata TSV)")
    chunk = _strip(raw["chunk_number"]).str.replace(r"\.0+$", "", regex=True)
    df = pd.DataFrame({"row": raw["row"]})
    df["path"] = "part" + chunk + "/" + _strip(raw["image_file"])
    for lv, col in level_cols.items():
        df[lv] = raw[col]
    return _finish(df, levels, False)


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


def read_inat2021(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """iNat2021 COCO-style ``train.json`` / ``val.json`` (method.md §4).

    One row per annotation; ``species`` = ``genus + " " + specific_epithet`` (the contract's binomial;
    the official code conditions on the epithet alone, docs/method.md §4).
    """
    path = Path(cfg.metadata)
    _check_file(path)
    ranks = [lv for lv in levels if lv != "species"]
    known = set(INAT_RANKS) | set(cfg.columns)
    unknown = [lv for lv in ranks if lv not in known]
    if unknown:
        raise UserError(f"params.yaml: level(s) {unknown} are not iNat2021 category fields ({', '.join(INAT_RANKS)})")
    cat_fields = [cfg.columns.get(lv, lv) for lv in ranks]
    if "species" in levels:
        cat_fields += [cfg.columns.get("genus", "genus"), "specific_epithet"]
    cat_fields = list(dict.fromkeys(cat_fields))
    data = read_json(path)
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
    df["path"] = _strip(df["file_name"].astype("string"))
    for lv in ranks:
        df[lv] = _strip(df[cfg.columns.get(lv, lv)].astype("string"))
    if "species" in levels:
        genus = _strip(df[cfg.columns.get("genus", "genus")].astype("string"))
        epithet = _strip(df["specific_epithet"].astype("string"))
        df["species"] = genus + " " + epithet
    out = _finish(df, levels, False)
    unknown_image = df["file_name"].isna().to_numpy()
    unknown_cat = (df["_cat"] == "left_only").to_numpy() & ~unknown_image
    drops.add("unknown_image_id", out[unknown_image])
    drops.add("unknown_category_id", out[unknown_cat])
    return out[~(unknown_image | unknown_cat)].reset_index(drop=True)


def read_table(cfg: DatasetConfig, levels: list[str], drops: Drops, columns: dict | None = None) -> pd.DataFrame:
    """Any CSV / TSV / Parquet; ``dataset.columns`` maps ``{level | image | bbox_x.. : column}``.

    Unmapped levels and ``image`` default to a column of the same name.
    """
    columns = dict(cfg.columns if columns is None else columns)
    allowed = {"image", *levels, *BBOX_COLUMNS}
    unknown = sorted(set(columns) - allowed)
    if unknown:
        raise UserError(f"params.yaml: dataset.columns has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    bbox_keys = [k for k in BBOX_COLUMNS if k in columns]
    if bbox_keys and len(bbox_keys) != 4:
        raise UserError(f"params.yaml: dataset.columns maps {bbox_keys}; map all of {BBOX_COLUMNS} or none")
    image_col = str(columns.get("image", "image"))
    level_cols = {lv: str(columns.get(lv, lv)) for lv in levels}
    wanted = [image_col, *level_cols.values(), *(str(columns[k]) for k in bbox_keys)]
    raw = read_any_table(cfg.metadata, wanted)
    df = pd.DataFrame({"row": raw["row"]})
    df["path"] = _strip(raw[image_col])
    for lv, col in level_cols.items():
        df[lv] = raw[col]
    if bbox_keys:
        for k in BBOX_COLUMNS:
            df[k] = pd.to_numeric(raw[str(columns[k])], errors="coerce").astype("float64")
    return _finish(df, levels, bool(bbox_keys))


def read_synthetic(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """The built-in synthetic world's ``annotations.csv``: the ``table`` reader with its fixed map."""
    return read_table(cfg, levels, drops, columns={k: v for k, v in SYNTHETIC_COLUMNS.items() if k in levels or k == "image"})


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
