"""The image-root fingerprint (`images` stage): content-based, cached by stat, one-line errors."""

from __future__ import annotations

import os
import shutil

import pytest

from taxadiffusion.core.errors import UserError
from taxadiffusion.data import images as imageroot


def _root(tmp_path, name="root"):
    root = tmp_path / name
    (root / "a" / "b").mkdir(parents=True)
    (root / "x.png").write_bytes(b"x" * 10)
    (root / "a" / "y.png").write_bytes(b"y" * 20)
    (root / "a" / "b" / "z.png").write_bytes(b"z" * 30)
    return root


def test_fingerprint_is_content_based_and_cached(tmp_path, monkeypatch):
    root = _root(tmp_path)
    calls = []
    real = imageroot.sha256_file
    monkeypatch.setattr(imageroot, "sha256_file", lambda p: calls.append(p) or real(p))
    first = imageroot.fingerprint_root(root, tmp_path / "cache.sqlite", show_progress=False)
    assert first["files"] == 3 and first["bytes"] == 60 and len(calls) == 3
    calls.clear()
    assert imageroot.fingerprint_root(root, tmp_path / "cache.sqlite", show_progress=False) == first
    assert calls == [], "an unchanged root must not be read again"
    # a copy with other mtimes / inodes (a fresh clone) has the same fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy)
    os.utime(copy / "x.png", (1, 1))
    assert imageroot.fingerprint_root(copy, tmp_path / "other.sqlite", show_progress=False) == first
    # same size, new bytes, new mtime: re-hashed, and the fingerprint changes
    (root / "a" / "y.png").write_bytes(b"Y" * 20)
    os.utime(root / "a" / "y.png", ns=(10**18, 10**18))
    calls.clear()
    changed = imageroot.fingerprint_root(root, tmp_path / "cache.sqlite", show_progress=False)
    assert changed["digest"] != first["digest"] and len(calls) == 1
    (root / "a" / "b" / "z.png").unlink()
    assert imageroot.fingerprint_root(root, tmp_path / "cache.sqlite", show_progress=False)["files"] == 2


def test_missing_root_is_one_line_and_corrupt_cache_recovers(tmp_path):
    with pytest.raises(UserError) as exc:
        imageroot.fingerprint_root(tmp_path / "nowhere", tmp_path / "c.sqlite", show_progress=False)
    assert "dataset.images" in str(exc.value) and "\n" not in str(exc.value)
    root = _root(tmp_path)
    (tmp_path / "c.sqlite").write_bytes(b"not a database" * 100)
    assert imageroot.fingerprint_root(root, tmp_path / "c.sqlite", show_progress=False)["files"] == 3
