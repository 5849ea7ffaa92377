"""Faults injected into real stages and library calls: never a destroyed, faked or silently mixed result.

Each test reproduces one fault of the reliability review (truncated / bit-flipped files, colliding names,
killed direct runs, disk-full errors, hostile names) and asserts the safe outcome: old outputs intact, a
one-line error, a recomputation, or a counted drop.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from helpers.metrics_world import LEVELS, metrics_params, write_generated, write_shards
from helpers.params import REPO, tiny_params, write_params
from helpers.stages import run_stage

from taxadiffusion.cli import os_error_line
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_dir, atomic_path, remove_stale_temps
from taxadiffusion.core.names import MAX_LEN, PathNames, TreeNames
from taxadiffusion.core.text import markdown_cell, plain_text
from taxadiffusion.metrics.cache import FeatureCache
from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate
from taxadiffusion.metrics.probe import fit_probe_on_shards, load_probe
from taxadiffusion.metrics.tables import to_markdown, write_tables

HOSTILE = ["Colgen ab/cd", "Colgen ab_cd", "Colgen ab_cd__2", "A/B", "A_B", ".", "..", "...", "Abc", "abc", "ABC",
           "x" * 300, "ü" * 200, "con", "all", "a" * 96 + "-0123456789", " lead", "trail.", "</script>", ""]


# ---- 3 / 5: one injective name-to-path rule ---------------------------------------------------------------


def test_path_names_are_injective_safe_and_bounded():
    names = PathNames(reserved={"all"})
    given = [names(n) for n in HOSTILE]
    assert len({g.lower() for g in given}) == len(HOSTILE), "two names share a path (case-insensitively)"
    for g in given:
        assert not g.startswith(".") and not g.startswith(" ") and not g.endswith((".", " "))
        assert len(g.encode()) <= 255 and len(g) <= MAX_LEN + 11
        assert all(c.isascii() and (c.isalnum() or c in "._- ") for c in g), g
        assert g.lower() != "all"
    assert names("Colgen ab_cd") == "Colgen ab_cd"  # already safe and free: kept readable
    assert names("A/B") == given[3], "the same name must map to the same path every time"


def test_tree_names_keep_children_apart_per_parent_folder():
    tree = TreeNames()
    paths = [tree(c, s) for c, s in [("Collide", "Colgen ab/cd"), ("Collide", "Colgen ab_cd"),
                                     ("Collide", "Colgen ab_cd__2"), ("C/x", "s"), ("C_x", "s")]]
    assert len(set(paths)) == 5, paths
    assert paths[1] == "Collide/Colgen ab_cd"


# ---- 10: names reach dvc plots and Markdown as inert text ---------------------------------------------------


def test_plots_csv_and_markdown_escape_hostile_class_names(tmp_path):
    shards, gen = write_shards(tmp_path), write_generated(tmp_path)
    params = metrics_params(min_images_for_fid=7)
    fit_probe_on_shards(shards, tmp_path / "probe", LEVELS, params.probe, params.seed)
    summary = evaluate(params.evaluate, params.level_names,
                       EvaluatePaths(shards, gen, tmp_path / "probe", tmp_path / "m", tmp_path / "features"))
    evil = {"Aves": "</script><script>alert(9)</script>", "Reptilia": "pipe|class"}
    summary["per_class"] = {evil[k]: v for k, v in summary["per_class"].items()}
    write_tables(summary, LEVELS, tmp_path / "out")
    for csv in (tmp_path / "out" / "plots").glob("*.csv"):
        text = csv.read_text()
        assert "<" not in text and ">" not in text, csv
    assert plain_text(evil["Aves"]) in (tmp_path / "out" / "plots" / "class_fid.csv").read_text()
    md = (tmp_path / "out" / "class_metrics.md").read_text()
    assert "pipe\\|class" in md and "\\<script>" in md  # Markdown's own escape: rendered as text, never a tag
    assert not re.search(r"(?<!\\)<", md), "an unescaped '<' in the Markdown"
    rows = [line for line in md.splitlines() if line.startswith("|")][:4]  # header, rule, the two classes
    assert len({len(re.split(r"(?<!\\)\|", line)) for line in rows}) == 1, "a '|' split a Markdown row"
    metric_files = sorted(p.name for p in (tmp_path / "out" / "class").iterdir())  # evaluate.group_level
    assert len(metric_files) == 3 and "all.json" in metric_files
    assert not any(n.startswith(".") or "<" in n for n in metric_files)


def test_markdown_cell_escapes_for_markdown_not_html():
    table = pd.DataFrame({"Class name": ["a|b", "line\nbreak", "<b>x</b>"], "FID": [1.0, 2.0, 3.0]})
    md = to_markdown(table)
    assert md.count("\n") == 5
    assert markdown_cell("a|b") == "a\\|b" and markdown_cell("<b>") == "\\<b>" and markdown_cell("A & B") == "A \\& B"
    assert markdown_cell(">20") == ">20" and "&gt;" not in md and "&lt;" not in md  # was &gt;20 in rarity_metrics.md


# ---- 7: corrupt caches are recomputed, a corrupt probe is a one-line error ---------------------------------


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_corrupt_feature_cache_is_recomputed(tmp_path, damage):
    cache = FeatureCache(tmp_path / "features")
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    keys = ["a", "b", "c"]
    first = cache.features("probe", "id", "Aves", "h", keys, lambda: feats)
    path = cache.path("probe", "Aves", "h", "id")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    calls = []
    again = cache.features("probe", "id", "Aves", "h", keys, lambda: calls.append(1) or feats)
    np.testing.assert_array_equal(first, again)
    if damage == "truncate":
        assert calls == [1] and cache.misses == 2
    # the rewritten file loads cleanly
    with np.load(path) as z:
        np.testing.assert_array_equal(z["features"], feats)


def test_truncated_probe_is_a_one_line_error(tmp_path):
    shards = write_shards(tmp_path)
    params = metrics_params()
    fit_probe_on_shards(shards, tmp_path / "probe", LEVELS, params.probe, params.seed)
    weights = tmp_path / "probe" / "probe.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError) as exc:
        load_probe(tmp_path / "probe", LEVELS)
    message = str(exc.value)
    assert "probe.safetensors" in message and "\n" not in message


# ---- 8: a killed direct `shard` run leaves the old output or the new one, never a mix ----------------------


@pytest.mark.slow
def test_killed_shard_run_leaves_old_shards_and_temps_are_cleaned(data_workspace, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    for sub in ("data/synthetic", "data/prepared", "data/shards"):
        shutil.copytree(data_workspace / sub, work / sub)
    before = {p.relative_to(work): p.read_bytes() for p in (work / "data" / "shards").rglob("*") if p.is_file()}
    params = tiny_params(**{"dataset.resolution": 16, "shard.samples_per_shard": 1})
    write_params(work, params)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / "shard.py")], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((work / "data").glob(".tmp-shards.*/train/shard-000001.tar")):
        time.sleep(0.005)
    assert list((work / "data").glob(".tmp-shards.*")), "the shard stage did not start writing in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = {p.relative_to(work): p.read_bytes() for p in (work / "data" / "shards").rglob("*") if p.is_file()}
    assert after == before, "a killed shard run changed the old output"
    run_stage("shard.py", cwd=work)
    assert not list((work / "data").glob(".tmp-*")), "stale temporaries of the killed run were not removed"
    index = json.loads((work / "data" / "shards" / "index.json").read_text())
    assert index["resolution"] == 16 and index["samples_per_shard"] == 1


def test_remove_stale_temps_spares_live_writers(tmp_path):
    target = tmp_path / "table.parquet"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-table.parquet.{dead.pid}.abc"
    live = tmp_path / f".tmp-table.parquet.{os.getppid()}.def"
    stale.write_text("x")
    live.write_text("y")
    assert remove_stale_temps(target) == 1
    assert not stale.exists() and live.exists()
    with atomic_path(target) as tmp:
        tmp.write_text("ok")
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "f").write_text("ok")
    assert target.read_text() == "ok" and (tmp_path / "folder" / "f").read_text() == "ok"


# ---- 9: disk-full and other OS errors are one line naming the path ------------------------------------------


def test_os_errors_are_one_line_naming_the_path():
    line = os_error_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/models/class/x.safetensors"))
    assert line.startswith("/data/models/class/x.safetensors: ") and "space" in line and "\n" not in line


def test_stage_reports_an_os_error_as_one_line(tmp_path):
    write_params(tmp_path, tiny_params())
    (tmp_path / "blocker").write_text("a file where the output folder should go")
    proc = run_stage("synthesize.py", "--out", "blocker/synthetic", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "blocker" in lines[-1] and "Traceback" not in proc.stderr


def test_generation_paths_never_collide_for_hostile_names():
    from taxadiffusion.sampling.plan import PlanRule, make_plan, plan_images

    species = ["Colgen ab/cd", "Colgen ab_cd", "Colgen ab_cd__2", "Colgen AB_CD", "Colgen " + "z" * 300, ".hidden"]
    rows = [{"class": cls, "order": "O", "family": "F", "genus": "Colgen", "species": sp, "split": "test", "row": i}
            for i, (cls, sp) in enumerate([("Collide", s) for s in species] + [(".", "x y"), ("..", "x y"),
                                                                             ("A/B", "x y"), ("A_B", "x y")])]
    # a homonym: the same species name under two genera of one class
    rows.append({"class": "Collide", "order": "O", "family": "F", "genus": "Other", "species": "Colgen ab_cd",
                 "split": "test", "row": 99})
    test = pd.DataFrame(rows)
    plan = make_plan(test, LEVELS, PlanRule("species", 400, 1, 2), seed=0)
    images = plan_images(plan, LEVELS, "species", seed=0)
    paths = list(images["path"])
    assert len(plan) == len(rows) and len(paths) == 2 * len(rows)
    assert len({p.lower() for p in paths}) == len(paths), "two images share a path (case-insensitively)"
    for p in paths:
        for part in p.split("/"):
            assert part and not part.startswith(".") and len(part.encode()) <= 255, p


def test_condition_heads_must_divide_the_width():
    from taxadiffusion.models.conditioner import ConditionerConfig

    with pytest.raises(UserError) as exc:
        ConditionerConfig(levels=["a", "b"], width=64, num_layers=1, num_heads=3, ff_dim=32, dropout=0.1)
    assert "model.cond_heads=3" in str(exc.value) and "64" in str(exc.value) and "\n" not in str(exc.value)
