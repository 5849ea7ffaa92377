"""Params that cannot lie: a key given twice in params.yaml is a one-line error at every entry point (PyYAML would
keep the last one silently, DVC refuses the file)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.params import REPO

from taxadiffusion.cli import main as taxadiffusion_main
from taxadiffusion.config import load_params, read_params_dict
from taxadiffusion.config.file import _Yaml12Loader
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
