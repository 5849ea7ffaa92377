"""Files: atomic writes (temporary name in the same folder, then rename), JSON, and content hashes.

A killed stage therefore never leaves a truncated output behind (a half-written file keeps its
``.tmp-*`` name and is ignored / overwritten by the next run), and a stage with several outputs swaps them in
together (:func:`staged_outputs`), so a failed run leaves none of them half-updated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from taxadiffusion.core.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path) -> int:
    """Remove the temporaries of ``path`` left by killed processes (names carry the writer's pid, so a live
    writer's temporary is never touched). Returns how many were removed."""
    removed = 0
    for kind in (".tmp-", ".old-"):
        prefix = f"{kind}{path.name}."
        for stale in path.parent.glob(f"{kind}*"):
            pid = stale.name[len(prefix):].split(".")[0] if stale.name.startswith(prefix) else ""
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
                removed += 1
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # a killed earlier run's partial file
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.{os.getpid()}.", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should be ordinary files
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; swap it in for ``path`` (whole) if the block
    succeeds. Nothing of an earlier ``path`` survives, and a killed run leaves the earlier one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)  # a killed earlier run's half-built folder
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}.{os.getpid()}.", dir=path.parent))
    old = path.with_name(f".old-{path.name}.{os.getpid()}")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


STAGING = "outputs"  # staged_outputs' folder: .tmp-outputs.<pid>.<random> inside the stage's output root


@contextmanager
def staged_outputs(root: str | Path) -> Iterator[Path]:
    """A stage with several outputs in one folder (``evaluate``: ``summary.json``, ``classes/``, the tables,
    ``plots/``; ``prepare``: the table, the taxonomy, the report) writes them all into the yielded staging folder,
    under their final names. When the block succeeds, each top-level entry replaces its namesake in ``root``: the
    old one is moved aside first and deleted only once every swap is done, so a failure while computing, while
    writing or in the middle of the swap leaves every earlier output as it was (the swaps done are undone).
    Entries of ``root`` the block did not write (other stages' outputs) are not touched."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _recover_aborted_swaps(root)
    remove_stale_temps(root / STAGING)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{STAGING}.{os.getpid()}.", dir=root))
    swapped: list[tuple[Path, Path | None]] = []  # (output, its moved-aside predecessor)
    try:
        yield staging
        for entry in sorted(staging.iterdir()):
            final, old = root / entry.name, None
            if final.exists() or final.is_symlink():
                old = root / f".old-{entry.name}.{os.getpid()}"
                _remove(old)
                os.replace(final, old)
            swapped.append((final, old))
            os.replace(entry, final)
    except BaseException:
        for final, old in reversed(swapped):  # undo: the new outputs out, the old ones back
            if old is not None and (old.exists() or old.is_symlink()):
                _remove(final)
                os.replace(old, final)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for _, old in swapped:
        if old is not None:
            _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _recover_aborted_swaps(root: Path) -> None:
    """A run killed in the middle of :func:`staged_outputs`' swap left ``.old-<name>.<pid>`` entries: put back the
    ones whose output is missing, drop the others (their output was already replaced)."""
    for old in root.glob(".old-*"):
        name, _, pid = old.name[len(".old-"):].rpartition(".")
        if not (name and pid.isdigit()) or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        final = root / name
        if final.exists() or final.is_symlink():
            _remove(old)
        else:
            os.replace(old, final)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; bad JSON or non-UTF-8 text is a one-line :class:`UserError` naming line/column."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def sha256_file(path: str | Path, length: int | None = None) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks (weights can be GBs); ``length`` truncates."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:length] if length else h.hexdigest()
