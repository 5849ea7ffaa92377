"""Running ``stages/<script>`` as a user or DVC would: a subprocess in a workspace, a subprocess from the
repository root, or in this process as ``__main__``; and a free TCP port for multi-process runs."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_stage(script: str, *args: str, cwd: Path, check: bool = True, env: dict | None = None,
              timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``stages/<script>`` as a user would (a subprocess) inside ``cwd``."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / script), *args],
        cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} {args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def run_repo_stage(script: str, *args, tmp: Path) -> subprocess.CompletedProcess:
    """Run ``python stages/<script>`` from the repository root, offline, one thread, ``TORCH_HOME`` in ``tmp``
    (nothing cached); the caller checks the exit code."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp / "torch-home")}
    return subprocess.run([sys.executable, f"stages/{script}", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def run_stage_here(script: str, *args, monkeypatch, capsys) -> tuple[int, str]:
    """Run ``stages/<script>`` as ``__main__`` in this process (no interpreter start-up): exit code, stderr."""
    monkeypatch.setattr(sys, "argv", [f"stages/{script}", *map(str, args)])
    capsys.readouterr()
    try:
        runpy.run_path(str(REPO / "stages" / script), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def free_port() -> int:
    """A free TCP port for a multi-process run's rendezvous (tests run in parallel: never the default 29500)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
