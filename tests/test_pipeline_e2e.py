"""End to end: the real `dvc repro` of dvc.yaml on a shrunk synthetic world, then a guidance-scale experiment.

Runs in a temporary git repository holding a copy of this checkout's working tree (tracked + untracked, not
ignored files: exactly what a `git clone` would hold once everything is committed). Checks that
- `dvc repro` runs every stage and leaves every declared output (dvc.lock) on disk, `dvc status` clean;
- `dvc exp run -S guidance_scale=8` re-runs generation/evaluation only: no data, base, training or probe
  stage (README's sweep promise; dvc.yaml lists `guidance_scale` for `generate` only), and the new
  metrics were really computed at scale 8;
- `seed=1` would re-run training, generation and the probe but no data stage (`dvc status`);
- `taxadiffusion sweep` reads the real `dvc exp show --json` of that repo;
- `preview` and `compute` changes leave `dvc status` clean, and `compute.processes: 2` makes a plain `dvc repro` of
  level 0 start two workers that train the one-process model.
Takes about 4 minutes on one core (about 25 stage processes, each importing torch for ~8 s).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers.e2e import RUNNING, copy_checkout, dvc, git, run_cmd
from helpers.params import tiny_params, write_params
from helpers.tolerance import LAUNCH_TOLERANCE
from safetensors.torch import load_file

from taxadiffusion.config import read_params_dict

pytestmark = pytest.mark.slow  # the whole DAG under `dvc repro`, then an experiment: minutes

WEIGHTS = ("condition.safetensors", "pytorch_lora_weights.safetensors")  # what a level 0 run trains
# Stages that must not run again when only the guidance scale changes.
NOT_AGAIN = ("synthesize", "prepare", "shard", "base", "probe")


def _changed(repo: Path) -> dict:
    """``dvc status`` less the `preflight` and `images` stages, `always_changed` by design (checks of what DVC cannot
    see, a cheap fingerprint walk; their outputs' bytes stay the same, so nothing after them re-runs)."""
    status = json.loads(dvc("status", "--json", cwd=repo))
    for stage in ("preflight", "images"):  # (preflight reads params too: a changed seed is listed, harmlessly)
        assert "always changed" in status.pop(stage, ["always changed"]), status
    return status


def _flat(tree: dict, prefix: str = "") -> list[str]:
    return [k for key, v in tree.items()
            for k in (_flat(v, f"{prefix}{key}.") if isinstance(v, dict) else [prefix + key])]


def _lock_outs(repo: Path) -> dict[str, list[str]]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {stage: [o["path"] for o in entry.get("outs", [])] for stage, entry in lock["stages"].items()}


def test_dvc_repro_then_guidance_experiment(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_checkout(repo)
    assert (repo / "dvc.yaml").exists() and (repo / ".dvc" / "config").exists()
    # 3 classes, 2 train steps per level, 3 sampling steps, 1 image per species; micro-batches of 2 (step 5)
    write_params(repo, tiny_params(**{"compute.micro_batch": 2}))
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "tiny params", cwd=repo)

    # 1. the whole pipeline from nothing
    log = dvc("repro", cwd=repo)
    stages = dvc("stage", "list", "--all", "--name-only", cwd=repo).split()
    assert {"synthesize", "prepare", "shard", "base", "generate", "probe", "evaluate", "report"} <= set(stages)
    assert [s for s in stages if s.startswith("train@")] == [f"train@{lv}" for lv in tiny_params()["levels"]]
    assert sorted(RUNNING.findall(log)) == sorted(stages), log[-3000:]
    outs = _lock_outs(repo)
    assert set(outs) == set(stages)
    missing = [p for paths in outs.values() for p in paths if not (repo / p).exists()]
    assert not missing, f"declared outputs not written: {missing}"
    assert _changed(repo) == {}
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    default_scale = float(tiny_params()["guidance_scale"])
    assert default_scale != 8.0
    assert summary["data"]["generation"]["scale"] == [str(default_scale)]
    # `dvc metrics show` is the headline (the all-classes row, the stage's one metrics file); `dvc metrics show
    # metrics/class` (evaluate.group_level) the per-class table: one file per generated class + the all-classes
    # row, same keys
    shown = json.loads(dvc("metrics", "show", "--json", cwd=repo))
    assert [Path(p).name for p in next(iter(shown.values()))["data"]] == ["headline.json"]
    shown = json.loads(dvc("metrics", "show", "--json", "metrics/class", cwd=repo))
    files = {Path(p).name: d["data"] for p, d in next(iter(shown.values()))["data"].items()}
    assert set(files) == {f"{c}.json" for c in summary["per_class"]} | {"all.json"}, sorted(files)
    assert len({json.dumps(sorted(_flat(v))) for v in files.values()}) == 1, "metrics files with different keys"
    assert files["all.json"]["probe"]["acc"] == summary["overall"]["probe"]["acc"]
    assert files["all.json"]["images"] == summary["data"]["n_generated"]
    assert json.loads((repo / "metrics" / "headline.json").read_text()) == files["all.json"]
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "repro", cwd=repo)

    # 2. a guidance-scale experiment re-runs sampling and evaluation only
    log = dvc("exp", "run", "-S", "guidance_scale=8", cwd=repo)
    ran = RUNNING.findall(log)
    assert {"generate", "evaluate", "report"} <= set(ran), log[-3000:]
    again = [s for s in ran if s in NOT_AGAIN or s.startswith(("train@", "method_train@"))]
    assert not again, f"guidance_scale=8 re-ran data/training stages {again}"
    assert yaml.safe_load((repo / "params.yaml").read_text())["guidance_scale"] == 8
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert summary["data"]["generation"]["scale"] == ["8.0"]
    manifest = pd.read_csv(repo / "data" / "generated" / "manifest.csv")
    assert set(manifest["scale"].astype(float)) == {8.0}
    assert _changed(repo) == {}

    # 3. the top-level seed drives the experiment: with seed 1, DVC sees training, generation and the probe
    # change and no data stage (`dvc status`, nothing run: that the seed reaches every image is test_generate's)
    reseeded = read_params_dict(repo / "params.yaml")  # YAML 1.2, as DVC reads it (PyYAML: `no` -> False)
    write_params(repo, {**reseeded, "seed": 1})
    stale = set(_changed(repo))
    # (`dvc status` names the stages whose own params changed; evaluate, report... follow from their outputs)
    assert {"generate", "probe"} | {f"train@{lv}" for lv in tiny_params()["levels"]} <= stale, stale
    assert not stale & {"synthesize", "prepare", "shard", "base"}, f"seed=1 would re-run data stages {sorted(stale)}"
    write_params(repo, reseeded)

    # 4. the sweep plot from the real `dvc exp show --json` of this repo
    run_cmd([sys.executable, "-m", "taxadiffusion", "sweep", "--out", "metrics/guidance_sweep.png"], repo, 300)
    table = pd.read_csv(repo / "metrics" / "guidance_sweep.csv")
    assert sorted(table["guidance_scale"]) == sorted([default_scale, 8.0])
    assert table["probe.fid"].notna().all()
    assert (repo / "metrics" / "guidance_sweep.png").stat().st_size > 1000

    # 5. how stages run is hashed nowhere: after each change of `preview` or `compute`, `dvc status` stays clean
    # (no 250K-step level re-trains for a logging setting), and two workers configured for train@<level 0> start by
    # themselves under a plain `dvc repro` and train the model one process trained (helpers/tolerance.py)
    level0 = next(iter(tiny_params()["levels"]))
    one = {name: load_file(repo / "models" / level0 / name) for name in WEIGHTS}
    current = read_params_dict(repo / "params.yaml")  # YAML 1.2 as DVC wrote it (`mixed_precision: no` is a string)
    for key, value in [("preview.every", 1), ("compute.log_every", 1), ("compute.checkpoint_every", 0),
                       ("compute.num_workers", 1), ("compute.gradient_checkpointing", True), ("compute.compile", False),
                       ("compute.micro_batch", 1), ("compute.processes", 2)]:
        section, name = key.split(".")
        current[section][name] = value
        write_params(repo, current)
        assert _changed(repo) == {}, f"{key}={value} would re-run stages"
    current["compute"].update(micro_batch=2, num_workers=0, gradient_checkpointing=False)
    write_params(repo, current)
    log = dvc("repro", "-f", "-s", f"train@{level0}", cwd=repo)
    assert "2 worker(s)" in log, log[-3000:]
    assert json.loads((repo / "scratch" / "train" / level0 / "timing.json").read_text())["processes"] == 2
    two = {name: load_file(repo / "models" / level0 / name) for name in WEIGHTS}
    largest = max(float((two[f][k] - one[f][k]).abs().max()) for f in WEIGHTS for k in one[f])
    assert largest < LAUNCH_TOLERANCE, largest
