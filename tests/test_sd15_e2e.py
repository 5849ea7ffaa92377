"""The sd15 path end to end on the miniature SD1.5 of tests/helpers/sd15.py: `dvc repro` with `model.preset: sd15`.

A fresh repository (a copy of this checkout, as tests/test_pipeline_e2e.py makes one) runs the DAG up to `report`
on a shrunk synthetic world at the miniature's native 32 px, two levels: `base` streams the train shards through
the VAE into latent chunks, training draws a fresh posterior sample every step from them, `generate` decodes with
the VAE, then `probe`, `evaluate` and `report`. A copy of that repository without its training and generation
outputs (and without DVC's cache) runs again to `generate`, with `train@class` killed (-9) after its first
checkpoint and `generate` killed after its first image: every output it ends with has the hash the uninterrupted
run recorded in dvc.lock, i.e. the same bytes. About 2-3 minutes on 2 shared cores (16 stage processes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from helpers.e2e import RUNNING, copy_checkout, dvc, e2e_env, git
from helpers.params import tiny_params, write_params
from helpers.sd15 import RESOLUTION, make_mini_sd15, mini_sd15_params
from PIL import Image

pytestmark = pytest.mark.slow  # `dvc repro` on the miniature SD1.5, then a killed and resumed run: minutes

LEVELS = {"class": {"parent": "base"}, "order": {"parent": "class"}}


def _params(mini: Path) -> dict:
    params = tiny_params(**mini_sd15_params(mini))
    params.update(levels=LEVELS, methods=["taxadiffusion"])
    params["prepare"]["finest_required"] = "order"
    if "figures" in params:  # a level of the two
        params["figures"]["embedding_level"] = "order"
    params["train"].update(steps=12)
    params["compute"].update(checkpoint_every=1, log_every=1)  # checkpoints at every step: a kill point
    params["generate"].update(target_level="order", batch_size=1, images_per_species=2)  # one image per call
    return params


def _repo(root: Path, mini: Path) -> Path:
    repo = root / "repo"
    repo.mkdir(parents=True)
    copy_checkout(repo)
    write_params(repo, _params(mini))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "sd15 miniature", cwd=repo)
    return repo


def _outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for entry in lock["stages"].values() for o in entry.get("outs", [])}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """The miniature and a repository where `dvc repro` ran the whole DAG uninterrupted."""
    root = tmp_path_factory.mktemp("sd15")
    mini = make_mini_sd15(root / "mini-sd15")
    repo = _repo(root / "a", mini)
    dvc("repro", "report", cwd=repo, timeout=900)
    return mini, repo


def test_sd15_pipeline_runs_on_streamed_latents(straight):
    _, repo = straight
    shards = json.loads((repo / "data/shards/index.json").read_text())
    index = json.loads((repo / "data/latents/latents.json").read_text())
    assert index["preset"] == "sd15" and index["cached"] == shards["train"]["count"] > 0
    assert index["shape"] == [4, RESOLUTION // 8, RESOLUTION // 8] and index["views"] == 1
    assert sorted(p.name for p in (repo / "data/latents").glob("train-*.safetensors")) == \
        [c["file"] for c in index["chunks"]]
    assert json.loads((repo / "models/base/base.json").read_text())["resolution"] == RESOLUTION
    run = json.loads((repo / "metrics/train/order/run.json").read_text())
    assert run["steps"] == 12 and np.isfinite(run["final_loss"])
    loss = (repo / "metrics/train/class/plots/metrics/loss.tsv").read_text().split()
    assert loss[:1] == ["step"] and len(loss) > 12
    manifest = (repo / "data/generated/manifest.csv").read_text().splitlines()
    first = Image.open(repo / "data/generated" / manifest[1].split(",")[manifest[0].split(",").index("path")])
    pixels = np.asarray(first)
    assert pixels.shape == (RESOLUTION, RESOLUTION, 3) and pixels.std() > 0  # decoded by the VAE
    assert json.loads((repo / "metrics/summary.json").read_text())["data"]["n_generated"] == len(manifest) - 1
    assert (repo / "reports/index.html").stat().st_size > 1000
    status = json.loads(dvc("status", "--with-deps", "--json", "report", cwd=repo))
    assert all(v == ["always changed"] for v in status.values()), status


def _start(repo: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--no-run-cache", "generate"], cwd=repo,
                            env=e2e_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_stage(proc: subprocess.Popen, script: str, ready, timeout: float = 300) -> str:
    """SIGKILL the `stages/<script>` process under ``proc`` as soon as ``ready()``; dvc then fails the stage."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, "the stage ended before it could be killed"
        time.sleep(0.005)
    victims = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if any(arg.endswith(f"stages/{script}") for arg in p.cmdline())]
    assert victims, f"no stages/{script} process to kill"
    for victim in victims:
        os.kill(victim.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-2000:]
    return out


def test_sd15_kill_and_resume_gives_the_same_files(straight, tmp_path):
    _, reference = straight
    repo = tmp_path / "repo"
    skip = reference / ".dvc"  # without DVC's cache: the outputs removed below must be made again, not checked out
    shutil.copytree(reference, repo, symlinks=True, ignore=lambda d, names: ["cache"] if Path(d) == skip else [])
    for out in ("models/class", "models/order", "data/generated", "metrics/train", "scratch"):
        shutil.rmtree(repo / out, ignore_errors=True)
    checkpoints = repo / "scratch/train/class/checkpoints"
    _kill_stage(_start(repo), "train.py", lambda: any(checkpoints.glob("checkpoint-*.safetensors")))
    assert not (repo / "models/class").exists()
    generated = repo / "data/generated"
    log = _kill_stage(_start(repo), "generate.py", lambda: any(generated.glob("*/*/[0-9]*.png")))
    assert "resuming from" in log, log[-3000:]
    assert not (generated / "manifest.csv").exists(), "generate finished before it was killed"
    ran = RUNNING.findall(dvc("repro", "--no-run-cache", "generate", cwd=repo, timeout=600))
    assert "generate" in ran and not {"synthesize", "prepare", "shard", "base"} & set(ran), ran
    ours, theirs = _outs(repo), _outs(reference)
    assert ours and {p: theirs[p] for p in ours} == ours, "outputs differ from the uninterrupted run's"
