"""A study kept as plain files: what ``taxadiffusion aggregate`` read, so its tables can be re-derived
after the experiments themselves are gone.

DVC experiments live in ``refs/exps/*`` of the repository that ran them; a clone of the branch does not carry
them, and neither does a new checkout of the project (the 2026-12-02 study was lost that way). A snapshot
folder holds exactly the inputs of the aggregation::

    <folder>/exp_show.json                    the `dvc exp show --json` document (each revision's params and
                                              metrics; its deps/outs hashes dropped)
    <folder>/files/<rev>/<path>               every summary read with `git show <rev>:<path>`, reduced to its
                                              `overall` block (the only part aggregate reads)

Write one with ``aggregate --save-snapshot <folder>``; aggregate from one with ``aggregate --snapshot <folder>``
(same numbers: tests/test_aggregate.py checks the committed docs/study against docs/study-seeds.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Optional

from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_dir, write_json

Reader = Callable[[str, str], Optional[str]]

EXP_SHOW = "exp_show.json"
FILES = "files"
DROPPED = ("deps", "outs")  # per-revision file hashes: large, and nothing aggregate reads
REV = re.compile(r"^[0-9a-f]{7,64}$")


class RecordingReader:
    """A reader that remembers every file it found, for :func:`save`."""

    def __init__(self, read: Reader):
        self.read, self.found = read, {}

    def __call__(self, rev: str, path: str) -> Optional[str]:
        text = self.read(rev, path)
        if text is not None:
            self.found[(rev, path)] = text
        return text


def _slim_revision(entry: dict) -> dict:
    entry = dict(entry)
    if isinstance(entry.get("data"), dict):
        entry["data"] = {k: v for k, v in entry["data"].items() if k not in DROPPED}
    return entry


def slim(doc: list) -> list:
    """The document without each revision's deps/outs."""
    out = []
    for base in doc:
        if not isinstance(base, dict):
            continue
        base = _slim_revision(base)
        exps = []
        for exp in base.get("experiments") or []:
            exps.append({**exp, "revs": [_slim_revision(r) for r in exp.get("revs") or []]})
        base["experiments"] = exps or None
        out.append(base)
    return out


def _overall_only(text: str) -> str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(data, dict) and "overall" in data:
        data = {"overall": data["overall"]}
    return json.dumps(data, indent=1) + "\n"  # key order kept: it orders the table's rows


def _safe_parts(rev: str, path: str) -> tuple[str, ...]:
    parts = tuple(Path(path).parts)
    if not REV.match(rev) or Path(path).is_absolute() or ".." in parts:
        raise UserError(f"snapshot: refusing to store {rev}:{path} (not a commit id and relative path)")
    return parts


def save(folder: str | Path, doc: list, found: dict) -> int:
    """Write the snapshot folder (built whole, then swapped in); returns the number of files kept."""
    with atomic_dir(folder) as tmp:
        write_json(tmp / EXP_SHOW, slim(doc))
        for (rev, path), text in sorted(found.items()):
            target = tmp.joinpath(FILES, rev, *_safe_parts(rev, path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_overall_only(text))
    return len(found)


def exp_show_file(folder: str | Path) -> Path:
    path = Path(folder) / EXP_SHOW
    if not path.is_file():
        raise UserError(f"{path}: not found; --snapshot takes a folder written by `aggregate --save-snapshot`")
    return path


def reader(folder: str | Path) -> Reader:
    """``read(rev, path)`` from the snapshot's files (None when it kept no such file)."""
    root = Path(folder) / FILES

    def read(rev: str, path: str) -> Optional[str]:
        try:
            file = root.joinpath(rev, *_safe_parts(rev, path))
        except UserError:
            return None
        return file.read_text() if file.is_file() else None
    return read
