"""A stage with several outputs swaps them in together (taxadiffusion.core.files.staged_outputs): a failure while
computing, writing or swapping leaves every earlier output as it was, direct runs included."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from helpers.metrics_world import LEVELS, metrics_params, write_generated, write_shards

from taxadiffusion.core import files
from taxadiffusion.core.files import staged_outputs
from taxadiffusion.metrics import evaluate as evaluate_module
from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate
from taxadiffusion.metrics.probe import fit_probe_on_shards

torch.set_num_threads(1)


def _tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _write(staging, text: str) -> None:
    (staging / "a.json").write_text(text)
    (staging / "dir").mkdir()
    (staging / "dir" / "x.txt").write_text(text)
    (staging / "b.csv").write_text(text)


def test_all_outputs_swap_in_and_others_stay(tmp_path):
    (tmp_path / "other.txt").write_text("another stage's")
    with staged_outputs(tmp_path) as staging:
        _write(staging, "one")
    with staged_outputs(tmp_path) as staging:
        _write(staging, "two")
    assert _tree(tmp_path) == {k: hashlib.sha256(v.encode()).hexdigest() for k, v in
                               {"a.json": "two", "b.csv": "two", "dir/x.txt": "two", "other.txt": "another stage's"}
                               .items()}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or backups left


def test_a_failure_while_writing_changes_nothing(tmp_path):
    with staged_outputs(tmp_path) as staging:
        _write(staging, "one")
    before = _tree(tmp_path)
    with pytest.raises(RuntimeError):
        with staged_outputs(tmp_path) as staging:
            (staging / "a.json").write_text("two")
            raise RuntimeError("disk full")
    assert _tree(tmp_path) == before


def test_a_failure_in_the_middle_of_the_swap_is_undone(tmp_path, monkeypatch):
    with staged_outputs(tmp_path) as staging:
        _write(staging, "one")
    before = _tree(tmp_path)
    real, calls = os.replace, []

    def third_swap_fails(src, dst):
        calls.append(dst)
        if len(calls) == 5:  # a.json aside + in, b.csv aside + in, then moving dir aside fails
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", third_swap_fails)
    with pytest.raises(OSError):
        with staged_outputs(tmp_path) as staging:
            _write(staging, "two")
    monkeypatch.undo()
    assert _tree(tmp_path) == before


def test_a_swap_killed_midway_is_recovered_by_the_next_run(tmp_path):
    (tmp_path / ".old-a.json.999999999").write_text("one")  # a dead writer moved a.json aside, then died
    (tmp_path / "b.csv").write_text("new")
    (tmp_path / ".old-b.csv.999999999").write_text("one")  # b.csv was already replaced
    with staged_outputs(tmp_path) as staging:
        (staging / "c.txt").write_text("c")
    assert _tree(tmp_path).keys() == {"a.json", "b.csv", "c.txt"}
    assert (tmp_path / "a.json").read_text() == "one" and (tmp_path / "b.csv").read_text() == "new"


def test_a_failed_direct_evaluate_leaves_the_earlier_outputs_whole(tmp_path, monkeypatch):
    """The case found by hand: summary.json was replaced, then a later output failed, leaving a mix."""
    shards = write_shards(tmp_path)
    params = metrics_params()
    fit_probe_on_shards(shards, tmp_path / "probe", LEVELS, params.probe, params.seed)
    out = tmp_path / "metrics"
    paths = EvaluatePaths(shards=shards, generated=write_generated(tmp_path / "g1"), probe=tmp_path / "probe",
                          out=out, cache=tmp_path / "features")
    evaluate(params.evaluate, LEVELS, paths)
    before = _tree(out)

    def grids_fail(*args, **kwargs):
        raise OSError(28, "No space left on device", str(out / "plots" / "grids"))

    monkeypatch.setattr(evaluate_module, "write_grids", grids_fail)
    other = EvaluatePaths(shards=shards, generated=write_generated(tmp_path / "g2", seed=8), probe=tmp_path / "probe",
                          out=out, cache=tmp_path / "features")  # other images: every output would change
    with pytest.raises(OSError):
        evaluate(params.evaluate, LEVELS, other)
    assert _tree(out) == before
