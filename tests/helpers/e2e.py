"""End-to-end runs in a fresh repository: a copy of this checkout's working tree (tracked + untracked, not ignored
files: what a `git clone` holds once everything is committed) as a new git repository, and `dvc` / `git` commands
run in it with a clean environment (no ``PYTHONPATH``: the stages import taxadiffusion from the copy)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNING = re.compile(r"^Running stage '([^']+)':", re.M)  # one line per stage `dvc repro` runs


def e2e_env() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@example.com",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@example.com"}
    env.pop("PYTHONPATH", None)  # the stages must import taxadiffusion from the copy, as in a real clone
    return env


def run_cmd(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    """``cmd``'s stdout + stderr; a non-zero exit is an AssertionError with the output's tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=e2e_env(), capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-5000:]}")
    return out


def dvc(*args: str, cwd: Path, timeout: int = 600) -> str:
    return run_cmd([sys.executable, "-m", "dvc", *args], cwd, timeout)


def git(*args: str, cwd: Path) -> str:
    return run_cmd(["git", *args], cwd, 120)


def copy_checkout(dst: Path) -> None:
    """The working tree as a fresh repo: what `git clone` gives once the lead commits (uncommitted files too)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if rel == "dvc.lock" or not (src.is_file() or src.is_symlink()):  # deleted-but-tracked; a lock of other params
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel, follow_symlinks=False)
    git("init", "-q", cwd=dst)
    git("config", "user.email", "e2e@example.com", cwd=dst)
    git("config", "user.name", "e2e", cwd=dst)
