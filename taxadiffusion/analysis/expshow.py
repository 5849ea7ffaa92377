"""Reading ``dvc exp show --json`` (dvc 3): the document, its revisions, and which of them can be used.

Shared by ``taxadiffusion sweep`` (metric vs a swept param) and ``taxadiffusion aggregate``
(mean ± sd over seeds). The document is a list of revisions, each ``{rev, name, data: {params: {file: {data}},
metrics: {file: {data}}, ...}, error, experiments}``, experiments as ``{revs: [...], executor: {state, ...}}``
(tests/test_sweep.py has one captured from dvc 3.67.1). A failed experiment keeps ``error`` and the metrics
of the workspace it was queued from, so its numbers must not be used.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from taxadiffusion.core.errors import UserError

RUNNING_STATES = ("queued", "running")
# Metric kinds where a smaller number is better (docs/method.md: FID ↓, LPIPS ↓; 1-cos is a distance); accuracies
# and the BioCLIP score are better larger.
LOWER_IS_BETTER = ("fid", "lpips", "dist")


@dataclass(frozen=True)
class ExpSource:
    """Where the experiments come from (the tools' ``--json``, ``--all-commits``, ``--include-workspace``): a saved
    ``dvc exp show --json`` file, or ``dvc`` run in ``cwd``."""

    json_file: Optional[str | Path] = None
    all_commits: bool = False
    include_workspace: bool = False  # also the (uncommitted) workspace row
    cwd: str | Path = "."

    def document(self) -> list:
        return exp_show(self.json_file, self.all_commits, self.cwd)

    @staticmethod
    def add_arguments(parser) -> None:
        """The tools' ``--json``, ``--all-commits`` and ``--include-workspace`` (``sweep``, ``aggregate``)."""
        parser.add_argument("--json", default=None, help="read this `dvc exp show --json` file instead of running dvc")
        parser.add_argument("--all-commits", action="store_true", help="experiments of all commits, not only HEAD's")
        parser.add_argument("--include-workspace", action="store_true", help="also the (uncommitted) workspace row")

    @classmethod
    def from_args(cls, args) -> "ExpSource":
        return cls(args.json, args.all_commits, args.include_workspace)


def exp_show(json_file: Optional[str | Path] = None, all_commits: bool = False, cwd: str | Path = ".") -> list:
    """The ``dvc exp show --json`` document: read from ``json_file`` or from a ``dvc`` subprocess in ``cwd``."""
    if json_file is not None:
        path = Path(json_file)
        if not path.exists():
            raise UserError(f"{path}: not found (write it with: dvc exp show --json > {path})")
        text, where = path.read_text(), str(path)
    else:
        cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise UserError(f"`dvc exp show --json` failed in {Path(cwd).resolve()} (exit {proc.returncode}): {last}")
        text, where = proc.stdout, "`dvc exp show --json` output"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(doc, list):
        raise UserError(f"{where}: expected a JSON list of revisions (dvc 3 `exp show --json`), "
                        f"got {type(doc).__name__}")
    return doc


def revisions(doc: list, include_workspace: bool) -> Iterator[tuple[dict, str, Optional[dict], dict]]:
    """Yield ``(entry, kind, executor, baseline_entry)`` for every baseline commit and every experiment under it."""
    for base in doc:
        if not isinstance(base, dict):
            continue
        if base.get("rev") == "workspace":
            if include_workspace:
                yield base, "workspace", None, base
            continue
        yield base, "baseline", None, base
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                yield rev, "experiment", exp.get("executor"), base


def revision_name(entry: dict, kind: str) -> str:
    rev = str(entry.get("rev") or "")
    return entry.get("name") or (rev if kind == "workspace" else rev[:7])


def usable(entry: dict, executor: Optional[dict], params_file: str) -> tuple[Optional[dict], Optional[dict], str]:
    """``(data, params, "")`` for a finished revision with ``params_file``, else ``(None, None, why skipped)``."""
    state = (executor or {}).get("state")
    if state in RUNNING_STATES:
        return None, None, f"still {state}"
    if entry.get("error") or state == "failed":
        return None, None, "failed"  # its metrics are those of the workspace it was queued from
    data = entry.get("data")
    if not isinstance(data, dict):
        return None, None, "no data"
    params = file_data(data, "params", params_file)
    if params is None:
        return None, None, f"no {params_file}"
    return data, params, ""


def get(tree: Any, dotted: str) -> Any:
    """``tree['a']['b']`` for ``'a.b'``; ``KeyError`` when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            raise KeyError(dotted)
        tree = tree[part]
    return tree


def file_data(data: dict, section: str, file: str) -> Optional[dict]:
    """The parsed content of ``file`` under ``data[section]`` (``params`` / ``metrics``), or None."""
    entry = (data.get(section) or {}).get(file)
    if not isinstance(entry, dict) or entry.get("error") or not isinstance(entry.get("data"), dict):
        return None
    return entry["data"]


def flatten(tree: Any, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}`` (lists and other leaves kept as they are)."""
    if isinstance(tree, dict):
        out: dict = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def numeric_keys(tree: dict, limit: int = 12) -> list[str]:
    keys = [k for k, v in flatten(tree).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sorted(keys, key=lambda k: not k.startswith("probe."))[:limit]  # the headline numbers first


def as_float(value: Any) -> Optional[float]:
    """A finite float, or None (bools, None, text, NaN and inf are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def drawn_at_other_scale(metrics: dict, scale: Optional[float]) -> bool:
    """Whether evaluate's metrics record (``scale``: what the images were drawn at) another scale than ``scale``:
    a stale metrics file. False when either side does not say."""
    if scale is None or "scale" not in metrics:
        return False
    return as_float(metrics["scale"]) != scale
