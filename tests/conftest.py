"""Shared fixtures: a tiny end-to-end workspace built through the real stage entry points."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
        raise AssertionError(f"{script} {args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def free_port() -> int:
    """A free TCP port for a multi-process run's rendezvous (tests run in parallel: never the default 29500)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_params(**overrides) -> dict:
    """params.yaml of the repo, shrunk for tests (few images, few steps), with absolute asset paths."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"].update(n_classes=3, images_per_species=[2, 8])
    params["model"]["pretrained"] = str(REPO / "assets" / "tiny-base")
    params["model"].update(cond_layers=1, cond_ff=64)
    params["train"].update(steps=2, batch_size=4, checkpoint_every=1, log_every=1)
    params["generate"].update(batch_size=8, images_per_species=1, images_per_species_capped=1)
    params["num_inference_steps"] = 3
    params["probe"].update(steps=20, batch_size=16)
    params["preview"].update(taxa=2, per_taxon=1, steps=2)  # still drawn at every level's last step
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            params[section][name] = value
        else:
            params[section] = value
    return params


def write_params(workdir: Path, params: dict) -> Path:
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def data_workspace(tmp_path_factory) -> Path:
    """synthesize -> prepare -> shard -> base on a small synthetic world (real stage scripts)."""
    work = tmp_path_factory.mktemp("workspace")
    write_params(work, tiny_params())
    for script in ("synthesize.py", "prepare.py", "shard.py", "base.py"):
        run_stage(script, cwd=work)
    return work
