"""Annotation tables: CSV / TSV (header checked with the ``csv`` module, body parsed by pyarrow: multithreaded,
only the needed columns, every column pinned to string) and Parquet, chosen by the file extension.

Every failure is a one-line :class:`UserError` naming the file and where: the header line, or the data row,
its line and the column (empty file, missing column, a wrong field count, text that is not UTF-8).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from taxadiffusion.core.errors import UserError

_MAX_HEADER_SHOWN = 12
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a byte that is not UTF-8


def check_file(path: Path) -> None:
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


def _open_text(path: Path):
    """Text with any byte that is not UTF-8 kept as a lone surrogate, so it can be found and reported."""
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def _not_utf8(path: Path, where: str, text: str, match: re.Match) -> UserError:
    byte = ord(match.group()) - 0xDC00
    before = text[max(0, match.start() - 20): match.start()]
    after = f" after {before!r}" if before else ""
    return UserError(f"{path}: {where}: not UTF-8 text (byte 0x{byte:02X}{after}); save the file as UTF-8")


def _read_header(path: Path, delimiter: str, quoted: bool) -> list[str]:
    csv.field_size_limit(2**31 - 1)
    try:
        with _open_text(path) as f:
            for header in _csv_reader(f, delimiter, quoted):
                if header:
                    break
            else:
                raise UserError(f"{path}: file is empty (expected a header line and data rows)")
    except csv.Error as exc:
        raise UserError(f"{path}: line 1 (header): {exc}") from None
    for i, name in enumerate(header):
        m = _NOT_UTF8.search(name)
        if m:
            raise _not_utf8(path, f"line 1 (header), column {i + 1}", name, m)
    return header


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


def _find_not_utf8(path: Path, delimiter: str, quoted: bool, header: list[str], wanted: list[str]) -> UserError | None:
    """The first byte that is not UTF-8 in a column we read, named by data row, line and column.

    Only runs on the error path (pyarrow names the column by number and no row); bytes in columns we do
    not read are ignored, as pyarrow ignores them.
    """
    index = [header.index(c) for c in wanted]
    with _open_text(path) as f:
        reader = _csv_reader(f, delimiter, quoted)
        data_row, last_line = -1, 0
        for fields in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not fields:
                continue
            data_row += 1
            for i in index:
                m = _NOT_UTF8.search(fields[i]) if data_row and i < len(fields) else None
                if m:
                    line = first_line + sum(v.count("\n") for v in fields[:i]) + fields[i].count("\n", 0, m.start())
                    return _not_utf8(path, f"data row {data_row} (line {line}), column {header[i]!r}", fields[i], m)
    return None


def missing_columns_error(path: Path, missing: list[str], header: list[str], hint: str = "") -> UserError:
    shown = ", ".join(repr(h) for h in header[:_MAX_HEADER_SHOWN])
    more = f", ... ({len(header)} in all)" if len(header) > _MAX_HEADER_SHOWN else ""
    which = ", ".join(repr(m) for m in missing)
    # column names match exactly, case included (docs/datasets.md): point at a header name that differs only by case
    folded = {h.casefold(): h for h in header}
    near = [f"{m!r} -> {folded[m.casefold()]!r}" for m in missing if m.casefold() in folded]
    case = (f"; column names match case-sensitively: map {', '.join(near)} with dataset.columns" if near else "")
    return UserError(f"{path}: line 1 (header): missing required column(s) {which}{hint}; the header has {shown}{more}"
                     f"{case}")


def _field_count_error(path: Path, bad: list, delimiter: str, quoted: bool, n_header: int) -> UserError:
    where = _find_bad_row(path, delimiter, quoted, n_header)
    more = f" ({len(bad) - 1} more such rows)" if len(bad) > 1 else ""
    if where is not None:
        row, line, n = where
        return UserError(f"{path}: data row {row} (line {line}): {n} fields, but the header has {n_header}{more}")
    first = bad[0]
    return UserError(f"{path}: a row has {first.actual_columns} fields, but the header has {first.expected_columns}"
                     f"{more}: {first.text[:80]!r}")


def read_delimited(
    path: str | Path,
    columns: list[str],
    *,
    delimiter: str,
    quoted: bool = True,
    hint: str = "",
) -> pd.DataFrame:
    """Read ``columns`` (all as strings; an empty field -> NA) plus ``row`` from a CSV/TSV file."""
    path = Path(path)
    check_file(path)
    header = _read_header(path, delimiter, quoted)
    wanted = list(dict.fromkeys(columns))
    missing = [c for c in wanted if c not in header]
    if missing:
        raise missing_columns_error(path, missing, header, hint)

    bad: list = []

    def on_bad_row(row) -> str:
        bad.append(row)
        return "skip"  # keep going to count them all; raised below with the first row's number

    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                               newlines_in_values=quoted, invalid_row_handler=on_bad_row)
    convert = pacsv.ConvertOptions(include_columns=wanted, column_types={c: pa.string() for c in wanted},
                                   null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True)
    try:
        table = pacsv.read_csv(path, parse_options=parse, convert_options=convert,
                               read_options=pacsv.ReadOptions(block_size=16 << 20))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        text = str(exc).strip()
        found = _find_not_utf8(path, delimiter, quoted, header, wanted) if "UTF8" in text.upper() else None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise found or UserError(f"{path}: cannot parse the file: {first}") from None
    if bad:
        raise _field_count_error(path, bad, delimiter, quoted, len(header))
    if table.num_rows == 0:
        raise UserError(f"{path}: has a header but no data rows")
    df = table.to_pandas()
    df["row"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df


def _as_text(path: Path, name: str, col: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        for i, value in enumerate(col.to_pylist()):
            try:
                value is None or value.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = value.decode("utf-8", "surrogateescape")
                m = _NOT_UTF8.search(text, exc.start)
                raise _not_utf8(path, f"data row {i + 1}, column {name!r}", text, m) from None
    raise UserError(f"{path}: column {name!r} has type {col.type}, which cannot be read as text")


def read_parquet_columns(path: str | Path, columns: list[str], hint: str = "") -> pd.DataFrame:
    path = Path(path)
    check_file(path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    names = pf.schema_arrow.names
    wanted = list(dict.fromkeys(columns))
    missing = [c for c in wanted if c not in names]
    if missing:
        raise missing_columns_error(path, missing, names, hint)
    table = pf.read(columns=wanted)
    if table.num_rows == 0:
        raise UserError(f"{path}: has no data rows")
    df = pa.table({c: _as_text(path, c, table.column(c)) for c in wanted}).to_pandas()
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
