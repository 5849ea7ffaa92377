"""Caches that only save work live in the per-user cache folder, so `dvc exp run --queue` experiments find them.

Each queued experiment runs in a fresh `.dvc/tmp/exps/<tmp>/` copy of the repository without the workspace's
git-ignored `scratch/` and `data/features/`: the image root was hashed again and every real feature recomputed.
The commands are run as dvc.yaml writes them (through the shell), in two workspaces standing for two experiments.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from helpers.params import REPO, tiny_params, write_params

from taxadiffusion.core.usercache import user_cache_dir
from taxadiffusion.data import images as imageroot

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
COUNTS = re.compile(r"(\d+) hashed now, (\d+) from the cache")


def _shell(cmd: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    """A dvc.yaml command as DVC runs it (``sh -c``), with this interpreter and the repository's stage scripts."""
    cmd = cmd.replace("python stages/", f"{sys.executable} {REPO}/stages/").replace("$(python ", f"$({sys.executable} ")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TAXADIFFUSION_CACHE": str(cache)}
    return subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _image_root(path: Path) -> Path:
    for i in range(5):
        (path / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (path / f"d{i % 2}" / f"{i}.png").write_bytes(bytes([i]) * (100 + i))
    return path


def test_user_cache_dir_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TAXADIFFUSION_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert user_cache_dir("features") == tmp_path / "home" / ".cache" / "taxadiffusion" / "features"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    assert user_cache_dir() == tmp_path / "home" / ".cache" / "taxadiffusion"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir("image_root") == tmp_path / "xdg" / "taxadiffusion" / "image_root"
    monkeypatch.setenv("TAXADIFFUSION_CACHE", str(tmp_path / "mine"))
    assert user_cache_dir("features") == tmp_path / "mine" / "features"
    out = subprocess.run([sys.executable, "-m", "taxadiffusion.core.usercache", "features"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.strip() == str(tmp_path / "mine" / "features")


def test_a_second_workspace_finds_the_image_root_cache(tmp_path):
    """Two experiment workspaces, one image root outside both (a user's data): the second reads no file."""
    root = _image_root(tmp_path / "images")
    cache = tmp_path / "user-cache"
    counts = []
    for name in ("exp-1", "exp-2"):
        work = tmp_path / name
        work.mkdir()
        write_params(work, tiny_params(**{"dataset.images": str(root)}))
        proc = _shell(DVC["stages"]["images"]["cmd"], work, cache)
        assert proc.returncode == 0, proc.stderr[-2000:]
        counts.append(tuple(map(int, COUNTS.search(proc.stderr).groups())))
        assert not (work / "scratch").exists()
    assert counts == [(5, 0), (0, 5)]
    assert len(list((cache / "image_root").glob("*.sqlite"))) == 1
    other = _image_root(tmp_path / "other-root")  # another root: its own file, never the first root's rows
    assert imageroot.cache_file(cache / "image_root", other) != imageroot.cache_file(cache / "image_root", root)


def test_a_root_inside_a_temporary_experiment_workspace_is_keyed_as_the_repository_folder(tmp_path):
    repo = tmp_path / "repo"
    root = _image_root(repo / "data" / "synthetic" / "images")
    temp = repo / ".dvc" / "tmp" / "exps" / "tmpab12cd" / "data" / "synthetic" / "images"
    assert imageroot.root_key(temp) == root.resolve().as_posix()
    assert imageroot.cache_file(tmp_path / "c", temp) == imageroot.cache_file(tmp_path / "c", root)
    # DVC checks the folder out again in every temporary workspace: linked from its cache (same inode and mtime)
    # the files are not read again; copied (new inodes) they are, as they must be
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        (temp / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        (os.link if i % 2 else shutil.copy2)(path, temp / path.relative_to(root))
    cache = tmp_path / "cache"
    first = imageroot.write_fingerprint(root, cache, tmp_path / "a.json")
    again = imageroot.fingerprint_root(temp, imageroot.cache_file(cache, temp), show_progress=False)
    assert again == first


def test_real_image_features_are_cached_in_the_user_cache_folder(tmp_path):
    """evaluate and method@<m> pass `--cache` the per-user folder (content-keyed features: safe to share)."""
    stages = {"evaluate": DVC["stages"]["evaluate"], "method": DVC["stages"]["method"]["do"]}
    for name, stage in stages.items():
        match = re.search(r'--cache ("\$\(python -m [^)]+\)"|\S+)', stage["cmd"])
        assert match, f"{name}: no --cache in {stage['cmd']}"
        proc = _shell(f"printf %s {match.group(1)}", tmp_path, tmp_path / "user-cache")
        assert proc.stdout == str(tmp_path / "user-cache" / "features"), (name, proc.stdout, proc.stderr)
