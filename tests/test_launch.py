"""One experiment however it is launched: the global batch as processes x micro-batches (training/batches.py), the
stages starting their own workers (core/launch.py), and the launch-invariance of training on CPU (gloo), within
the measured tolerance of tests/helpers/tolerance.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers.params import REPO, section, tiny_params, write_params
from helpers.stages import run_stage
from helpers.tolerance import LAUNCH_TOLERANCE
from safetensors.torch import load_file

from taxadiffusion.core import launch
from taxadiffusion.core.errors import UserError
from taxadiffusion.training.batches import BatchPlan, Draws, micro_batch, sample_indices
from taxadiffusion.training.latent_chunks import LatentTable

TOLERANCE = LAUNCH_TOLERANCE


# ---- the plan: global batch = processes x accumulation x micro-batch --------------------------------------------


@pytest.mark.parametrize("world, cap, micro, accumulation", [
    (1, 12, 12, 16), (2, 12, 12, 8), (8, 12, 12, 2), (16, 12, 12, 1), (32, 12, 6, 1),  # the FishNet preset's 192
    (1, 0, 192, 1), (4, 0, 48, 1), (3, 0, 64, 1), (1, 50, 48, 4),  # no cap; a cap that does not divide the share
])
def test_the_global_batch_is_the_same_for_every_launch(world, cap, micro, accumulation):
    plan = BatchPlan.of(192, world, cap)
    assert (plan.micro, plan.accumulation) == (micro, accumulation)
    assert plan.world * plan.accumulation * plan.micro == 192
    covered = [j for rank in range(world) for k in plan.micro_batches(rank) for j in plan.positions(k)]
    assert covered == list(range(192))  # every position of the step once, ranks in order


def test_a_batch_the_processes_cannot_share_is_one_line():
    with pytest.raises(UserError, match=r"train.batch_size=192: not divisible by the 5 training processes"):
        BatchPlan.of(192, 5, 0)


def test_every_image_once_per_epoch_and_the_stream_does_not_depend_on_the_split():
    n, batch = 10, 4
    stream = np.concatenate([sample_indices(n, batch, step, range(batch), seed=3) for step in range(5)])
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    halves = np.concatenate([sample_indices(n, batch, 2, range(0, 2), 3), sample_indices(n, batch, 2, range(2, 4), 3)])
    assert np.array_equal(halves, stream[8:12])


def test_a_sample_draws_the_same_numbers_in_any_micro_batch():
    """Position j of step s gets the same image, posterior sample, dropout, noise and timestep whether it is in a
    micro-batch of 1, 2 or 4 (the per-sample generators of training/batches.py)."""
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(6, 2, 4, 3, 3, generator=g), torch.rand(6, 2, 4, 3, 3, generator=g)
    lineages = [{"class": f"c{i % 2}", "order": f"o{i}"} for i in range(6)]
    source = LatentTable(mean, std, lineages)
    draws = Draws(seed=1, batch=4, levels=["class", "order"], level_dropout=0.5, num_train_timesteps=1000)
    whole = micro_batch(source, draws, BatchPlan.of(4, 1, 0), step=7, k=0)
    for micro in (1, 2):
        plan = BatchPlan.of(4, 1, micro)
        parts = [micro_batch(source, draws, plan, step=7, k=k) for k in range(plan.accumulation)]
        for key in ("x0", "noise", "t", "index"):
            assert torch.equal(torch.cat([p[key] for p in parts]), whole[key]), key
        assert [lin for p in parts for lin in p["lineages"]] == whole["lineages"]
    assert any(None in lin.values() for lin in whole["lineages"]) or draws.level_dropout == 0


# ---- the launcher ---------------------------------------------------------------------------------------------


def test_one_worker_runs_in_this_process_and_more_start_torchrun(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch.run_as_workers(section("compute", {"processes": 1}), ["stages/train.py"]) is None
    assert launch.processes_per_node(section("compute")) == (torch.cuda.device_count() or 1)  # auto
    cmd = launch.launch_command(section("compute", {"processes": 2}), ["stages/train.py", "--level", "x"], "tok")
    assert cmd[1:5] == ["-m", "taxadiffusion.core.launch", "--nproc_per_node=2", "--standalone"]  # torchrun, quiet
    assert cmd[-3:] == ["stages/train.py", "--level", "x"]
    nodes = section("compute", {"processes": 8, "nodes": 4, "launcher": "srun --ntasks-per-node=1",
                                "rdzv_endpoint": "head:29400"})
    cmd = launch.launch_command(nodes, ["stages/train.py"], "tok")
    assert cmd[:2] == ["srun", "--ntasks-per-node=1"]
    assert {"--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d", "--rdzv_endpoint=head:29400",
            "--rdzv_id=tok"} <= set(cmd)


def test_several_nodes_need_a_launcher():
    with pytest.raises(UserError, match=r"compute.launcher='': expected a command that starts the launcher on each of"):
        section("compute", {"nodes": 2})
    with pytest.raises(UserError, match=r"compute.processes=0: expected an integer >= 1"):
        section("compute", {"processes": 0})


def test_a_worker_that_cannot_see_the_workspace_stops_in_one_line(tmp_path, monkeypatch):
    token = tmp_path / "scratch" / "launch" / "abc.txt"
    monkeypatch.setenv(launch.TOKEN_ENV, f"{token}=abc")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(UserError, match=r"worker 3 on .*: .*abc.txt .* is missing here: every node must see the "
                                        r"workspace at the same path on a shared filesystem"):
        launch.check_shared_workspace()
    token.parent.mkdir(parents=True)
    token.write_text("abc")
    launch.check_shared_workspace()  # seen: nothing to say


def test_a_stage_with_two_workers_on_a_missing_launcher_is_one_line(tmp_path):
    params = tiny_params(**{"compute.processes": 2, "compute.nodes": 2, "compute.launcher": "no-such-srun"})
    write_params(tmp_path, params)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, str(REPO / "stages/generate.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: params.yaml compute.launcher='no-such-srun': no-such-srun: no such program"), proc.stderr
    assert not list((tmp_path / "scratch" / "launch").glob("*"))  # the token folder is gone again



def test_two_workers_failing_alike_print_one_line_and_no_torchrun_report(tmp_path):
    """Both workers fail with the same one-line error: the person sees it once, with the stage's status 2, and none
    of torchrun's failure report (a traceback, a table per rank)."""
    write_params(tmp_path, tiny_params(**{"compute.processes": 2}))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE", "RANK")}
    proc = subprocess.run([sys.executable, str(REPO / "stages/generate.py"), "--model", "models/nothing"],
                          cwd=tmp_path, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: models/nothing/train_config.json: missing; models/nothing is not a trained level "
                      "(run `dvc repro` first)"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr[-3000:]
    assert "2 worker(s)" in proc.stderr
    assert not list((tmp_path / "scratch" / "launch").iterdir())  # the token folder is gone

# ---- training: the same model however it is launched (real stage runs, gloo on CPU) --------------------------


def _train(work: Path, processes: int, micro: int, steps: int, max_steps: int | None = None, workers: int = 0):
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"].update(steps=steps, batch_size=4)
    params["compute"].update(processes=processes, micro_batch=micro, checkpoint_every=1, num_workers=workers)
    write_params(work, params)
    extra = ["--max-steps-this-run", str(max_steps)] if max_steps else []
    return run_stage("train.py", "--level", "class", "--parent", "models/base", "--out", "models/class",
                     "--shards", "data/shards", "--latents", "data/latents", "--scratch", "scratch/train/class",
                     "--log-dir", "metrics/train/class", *extra, cwd=work)


def _weights(work: Path) -> dict[str, torch.Tensor]:
    folder = work / "models" / "class"
    return {**load_file(folder / "condition.safetensors"), **load_file(folder / "pytorch_lora_weights.safetensors")}


def _largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
def test_one_by_four_two_by_two_four_by_one_and_a_resume_under_fewer_processes_train_the_same_model(
        data_workspace, tmp_path):
    runs = {}
    for processes in (1, 2, 4):
        work = tmp_path / f"p{processes}"
        shutil.copytree(data_workspace, work, ignore=shutil.ignore_patterns("scratch", "metrics"))
        _train(work, processes, micro=1, steps=4, workers=1 if processes == 2 else 0)  # (2: a data-loader worker)
        timing = json.loads((work / "scratch/train/class/timing.json").read_text())
        assert (timing["processes"], timing["micro_batch"], timing["accumulation"]) == (processes, 1, 4 // processes)
        runs[processes] = _weights(work)
    differences = {f"{p}x{4 // p}": _largest_difference(runs[p], runs[1]) for p in (2, 4)}
    print("largest parameter difference from 1x4:", differences)  # (pytest -s shows the measured figures)
    assert all(d < TOLERANCE for d in differences.values()), differences

    resumed = tmp_path / "resumed"
    shutil.copytree(data_workspace, resumed, ignore=shutil.ignore_patterns("scratch", "metrics"))
    stopped = _train(resumed, 2, micro=1, steps=4, max_steps=2)  # "killed" after 2 steps, under 2 processes
    assert not (resumed / "models/class").exists(), stopped.stderr[-2000:]
    again = _train(resumed, 1, micro=1, steps=4)  # resumed under 1
    assert "resuming from" in again.stderr + again.stdout
    resumed_difference = _largest_difference(_weights(resumed), runs[1])
    print("largest parameter difference, stopped under 2 + resumed under 1, from 1x4:", resumed_difference)
    assert resumed_difference < TOLERANCE
    # the run's identity (train_config.json) does not record the launch
    assert (resumed / "models/class/train_config.json").read_bytes() == (
        tmp_path / "p4" / "models/class/train_config.json").read_bytes()
