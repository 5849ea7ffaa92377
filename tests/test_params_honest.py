"""Params that cannot lie: a key given twice in params.yaml is a one-line error at every entry point (PyYAML would
keep the last one silently, DVC refuses the file), and a stage whose own params change in params.yaml while it runs
fails in one line before DVC can record values its outputs were not made with."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.metrics_world import write_params_yaml, write_shards
from helpers.params import REPO
from helpers.stages import run_stage_here

import taxadiffusion.metrics.probe as probe_module
from taxadiffusion.cli import main as taxadiffusion_main
from taxadiffusion.config import load_params, read_params_dict
from taxadiffusion.config.file import _Yaml12Loader
from taxadiffusion.config.stage_params import stage_keys
from taxadiffusion.core.errors import UserError

TEXT = (REPO / "params.yaml").read_text()
LINES = TEXT.splitlines()


def _line_of(prefix: str) -> int:
    """1-based number of the first line of params.yaml starting with ``prefix``."""
    return next(i for i, line in enumerate(LINES, 1) if line.startswith(prefix))


def _with_line_after(prefix: str, extra: str) -> tuple[str, int]:
    """params.yaml with ``extra`` inserted after the first line starting with ``prefix``; the new line's number."""
    at = _line_of(prefix)
    return "\n".join(LINES[:at] + [extra] + LINES[at:]) + "\n", at + 1


def _duplicates() -> dict[str, tuple[str, str, int, int]]:
    """case -> (params text, key path, first line, second line)."""
    top = TEXT + "train:\n  steps: 400\n"
    nested, steps_again = _with_line_after("  steps: 150", "  steps: 400")
    flow, flow_line = _with_line_after("levels:", "  class: {parent: base}")
    in_flow = TEXT.replace("  class: {parent: base}", "  class: {parent: base, parent: order}", 1)
    return {
        "top-level section twice": (top, "train", _line_of("train:"), len(LINES) + 1),
        "nested key twice": (nested, "train.steps", _line_of("  steps: 150"), steps_again),
        "level twice": (flow, "levels.class", flow_line, flow_line + 1),
        "key twice in a flow mapping": (in_flow, "levels.class.parent", _line_of("  class:"), _line_of("  class:")),
    }


@pytest.mark.parametrize("case", sorted(_duplicates()))
def test_a_key_given_twice_is_one_line_naming_file_key_path_and_both_lines(tmp_path, case):
    text, key, first, second = _duplicates()[case]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as exc:
        read_params_dict(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: key {key} is given twice (lines {first} and {second})"), message
    assert "\n" not in message
    with pytest.raises(UserError, match="is given twice"):
        load_params(path)


def test_yaml_1_2_booleans_and_merge_keys_still_read():
    """The duplicate check changes nothing else: `no` stays a string, and a merge key's value may be overridden."""
    data = yaml.load("a: no\nb: true\nbase: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n", Loader=_Yaml12Loader)
    assert data == {"a": "no", "b": True, "base": {"x": 1, "y": 2}, "c": {"x": 1, "y": 3}}


def _dup_params(tmp_path: Path) -> tuple[Path, str]:
    text, _, first, second = _duplicates()["nested key twice"]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path, f"{path}: key train.steps is given twice (lines {first} and {second})"


def test_a_stage_refuses_a_key_given_twice(tmp_path):
    """A stage run directly (a subprocess, as DVC or a person runs it)."""
    path, expected = _dup_params(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "prepare.py"), "--params", str(path), "--out",
                           str(tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {expected}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tool", [["paramcount"], ["draw", "--lineage", "A"]], ids=["paramcount", "draw"])
def test_the_tools_that_read_params_refuse_a_key_given_twice(tmp_path, monkeypatch, capsys, tool):
    """`taxadiffusion <tool> --params ...`, as a person types it."""
    path, expected = _dup_params(tmp_path)
    argv = [*tool, "--params", str(path)]
    monkeypatch.setattr(sys, "argv", ["taxadiffusion", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        taxadiffusion_main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"error: {expected}") and err.count("\n") == 1, err


@pytest.mark.slow
def test_accelerate_launch_refuses_a_key_given_twice(tmp_path):
    path, expected = _dup_params(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    # --quiet: the launcher exits 1 instead of printing its own traceback of the failed command
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "1", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "stages" / "prepare.py"),
           "--params", str(path), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and proc.stderr.startswith(f"error: {expected}"), proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


# ---- a stage's own params changed while it ran -------------------------------------------------------------


def test_stage_keys_are_the_dvc_yaml_params_of_the_stage_that_runs_the_script():
    dvc_yaml = REPO / "dvc.yaml"
    names, keys = stage_keys(dvc_yaml, "train.py")  # a foreach stage: its `do` template
    assert names == ["train"] and {"seed", "model", "train.steps", "levels"} <= set(keys)
    assert "train.baseline_budget" not in keys and "probe" not in keys
    assert not {"preview", "compute"} & set(keys)  # diagnostics and how it runs: in no hash (docs/scale-out.md)
    assert stage_keys(dvc_yaml, "other.py", dvc_stage="train@class") == (names, keys)  # DVC names the stage
    assert stage_keys(dvc_yaml, "probe.py") == (["probe"], ["seed", "probe", "levels"])


def _probe_workspace(tmp_path: Path) -> tuple[Path, Path]:
    """Tiny shards and a params.yaml next to a copy of dvc.yaml, as DVC runs a stage from the repository root."""
    shards = write_shards(tmp_path)
    params = write_params_yaml(tmp_path)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    return shards, params


def _run_probe_editing(tmp_path, monkeypatch, capsys, edit: dict) -> tuple[int, str]:
    """Run the real probe stage (stages/probe.py through run_stage); ``edit`` ({section: {key: value}} or
    {key: value}) is written into params.yaml after the stage has read it, while it trains."""
    shards, params = _probe_workspace(tmp_path)
    fit = probe_module.fit_probe_on_shards

    def edited_while_running(*args, **kwargs):
        data = yaml.safe_load(params.read_text())
        for key, value in edit.items():
            if isinstance(value, dict):
                data[key].update(value)
            else:
                data[key] = value
        params.write_text(yaml.safe_dump(data, sort_keys=False))
        return fit(*args, **kwargs)

    monkeypatch.setattr(probe_module, "fit_probe_on_shards", edited_while_running)
    return run_stage_here("probe.py", "--params", params, "--shards", shards, "--out", tmp_path / "probe",
                          monkeypatch=monkeypatch, capsys=capsys)


def test_a_stage_whose_own_param_changed_while_it_ran_fails_in_one_line(tmp_path, monkeypatch, capsys):
    """probe.steps 40 -> 400 while the probe trains: exit 2 (DVC records no lock) naming the key and both values."""
    code, err = _run_probe_editing(tmp_path, monkeypatch, capsys, {"probe": {"steps": 400}})
    assert code == 2, err
    # before the error: only the stage's own progress bars (\r-separated) and log lines
    line = re.split(r"[\r\n]+", err.strip())[-1]
    assert err.count("error:") == 1 and "Traceback" not in err, err
    assert re.fullmatch(r"error: \S*params\.yaml probe\.steps changed while stage probe ran \(40 -> 400\); its "
                        r"outputs were made with 40: re-run", line), line


def test_a_top_level_param_of_the_stage_counts_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DVC_STAGE", "probe")  # as under `dvc repro`
    code, err = _run_probe_editing(tmp_path, monkeypatch, capsys, {"seed": 5})
    assert code == 2 and "params.yaml seed changed while stage probe ran (0 -> 5)" in err, err


def test_editing_another_stages_params_while_a_stage_runs_does_not_stop_it(tmp_path, monkeypatch, capsys):
    """Preparing the next experiment (train.steps, guidance_scale) is not the probe's business."""
    code, err = _run_probe_editing(tmp_path, monkeypatch, capsys, {"train": {"steps": 400}, "guidance_scale": 8})
    assert code == 0, err
    assert (tmp_path / "probe" / "probe.safetensors").is_file()
