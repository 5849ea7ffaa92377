"""Ctrl-C (SIGINT) in a stage or a tool: one line on stderr saying what stopped, where, and that re-running resumes,
exit status 130, and no traceback or shutdown noise (progress bars closing, library warnings); re-running resumes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.params import REPO, tiny_params, write_params
from helpers.stages import run_stage

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def the_one_line(err: str) -> str:
    """The interrupt line, after checking that it is the last thing on stderr, on a line of its own, and that
    everything before it is progress-bar output (tqdm redraws with \\r; a bar line holds "%|"): no traceback,
    no error or warning printed while the process stopped."""
    assert err.endswith("\n") and err.count("interrupted: ") == 1, err[-3000:]
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert lines[-1].startswith("interrupted: "), err[-3000:]
    noise = [line for line in lines[:-1] if "%|" not in line]
    assert not noise, f"printed besides progress bars and the interrupt line: {noise[:10]}"
    return lines[-1]


def _run_script(tmp_path: Path, name: str, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / name
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=120)


# A tool in the middle of its work: a progress bar (closed by `with` while the interrupt unwinds, which prints) and
# a progress note; the Ctrl-C is a real SIGINT sent to the process itself.
TOOL = """
    import argparse, os, signal, time
    from tqdm import tqdm
    from taxadiffusion.cli import run_tool
    from taxadiffusion.core import progress

    def run(args):
        with tqdm(total=10, desc="demo") as bar:
            for i in range(10):
                bar.update(1)
                progress.note(f"at item {i + 1}/10")
                if i == 3:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(30)  # the interrupt lands here
        print("finished")

    run_tool(run, argparse.ArgumentParser(prog="taxadiffusion demo"), [])
"""


def test_a_tool_interrupted_prints_one_line_and_exits_130(tmp_path):
    proc = _run_script(tmp_path, "tool.py", TOOL)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert the_one_line(proc.stderr) == ("interrupted: taxadiffusion demo stopped at item 4/10; files are written "
                                         "whole or not at all: re-run it")
    assert "finished" not in proc.stdout


def test_a_second_ctrl_c_while_the_first_unwinds_stops_at_once(tmp_path):
    """A cleanup that hangs (here: 30 s) does not hold a user who presses Ctrl-C again."""
    start = time.monotonic()
    proc = _run_script(tmp_path, "tool.py", """
        import argparse, os, signal, time
        from taxadiffusion.cli import run_tool
        from taxadiffusion.core import progress

        def run(args):
            progress.note("at item 4/10")
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)  # the first interrupt lands here
            finally:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(30)  # a slow cleanup: the second interrupt lands here

        run_tool(run, argparse.ArgumentParser(prog="taxadiffusion demo"), [])
    """)
    assert proc.returncode == 130 and time.monotonic() - start < 25, proc.stderr[-3000:]
    assert the_one_line(proc.stderr).startswith("interrupted: taxadiffusion demo stopped at item 4/10; ")


def test_a_stage_interrupted_while_importing_prints_one_line(tmp_path):
    """Ctrl-C in the seconds a stage script spends importing torch, before run_stage takes over."""
    proc = _run_script(tmp_path, "stages/slow_start.py", """
        import os, signal, time
        from taxadiffusion.cli import run_stage
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # stands for `import torch`
    """)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert the_one_line(proc.stderr) == (f"interrupted: {tmp_path / 'stages' / 'slow_start.py'} stopped while "
                                         "starting, before any work: re-run it")


def _train_workspace(data_workspace: Path, root: Path) -> Path:
    work = root / "w"
    shutil.copytree(data_workspace, work, ignore=shutil.ignore_patterns("models", "scratch", "metrics"))
    shutil.copytree(data_workspace / "models" / "base", work / "models" / "base")
    write_params(work, tiny_params(**{"train.steps": 20, "compute.checkpoint_every": 2, "preview.every": 0}))
    return work


TRAIN_ARGS = ["--level", "class", "--parent", "models/base", "--out", "models/class", "--shards", "data/shards",
              "--latents", "data/latents", "--scratch", "scratch/train/class", "--log-dir", "metrics/train/class"]


@pytest.mark.slow
def test_a_training_stage_interrupted_prints_one_line_exits_130_and_resumes(data_workspace, tmp_path):
    straight = _train_workspace(data_workspace, tmp_path / "a")
    run_stage("train.py", *TRAIN_ARGS, cwd=straight)

    work = _train_workspace(data_workspace, tmp_path / "b")
    env = {**ENV, "DVC_STAGE": "train@class"}  # as `dvc repro` runs it
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / "train.py"), *TRAIN_ARGS], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpts = work / "scratch/train/class/checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(ckpts.glob("checkpoint-0000000[4-9]*")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"rc {proc.returncode} (0: it finished before the signal)\n{err[-3000:]}"
    line = the_one_line(err)
    match = re.fullmatch(r"interrupted: stage train@class stopped at step (\d+)/20 of class \(checkpoint at step "
                         r"(\d+)\); finished work is kept: re-run dvc repro to resume", line)
    assert match and 20 > int(match[1]) >= int(match[2]) >= 4, line
    assert not (work / "models/class").exists()

    resumed = run_stage("train.py", *TRAIN_ARGS, cwd=work)
    assert "resuming from" in resumed.stderr + resumed.stdout
    for name in ("condition.safetensors", "pytorch_lora_weights.safetensors", "train_config.json"):
        assert (work / "models/class" / name).read_bytes() == (straight / "models/class" / name).read_bytes(), name
