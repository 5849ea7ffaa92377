"""Shared fixtures (the helpers they use live in tests/helpers/): a tiny end-to-end workspace built through
the real stage entry points."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.params import tiny_params, write_params
from helpers.stages import run_stage

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory) -> Path:
    """The per-user cache folder (taxadiffusion/core/usercache.py) of every stage a test runs, `dvc repro` included:
    a temporary one, never the person's ~/.cache."""
    folder = tmp_path_factory.mktemp("user-cache")
    os.environ["TAXADIFFUSION_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def data_workspace(tmp_path_factory) -> Path:
    """synthesize -> prepare -> shard -> base on a small synthetic world (real stage scripts)."""
    work = tmp_path_factory.mktemp("workspace")
    write_params(work, tiny_params())
    for script in ("synthesize.py", "prepare.py", "shard.py", "base.py"):
        run_stage(script, cwd=work)
    return work
