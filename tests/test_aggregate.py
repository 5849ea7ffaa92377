"""`taxadiffusion aggregate`: mean ± sd over seeds from `dvc exp show --json`.

The documents have the shape dvc 3.67.1 writes (tests/test_sweep.py has the captured one): a list of
revisions ``{rev, name, data: {params: {file: {data}}, metrics: {file: {data}}, ...}, error, experiments}``.
Only ``metrics/classes/all.json`` (the declared DVC metrics) is in it; the methods' and the main summary
(with the rarity split) are read at each experiment's commit, here from a dict or a real git repository.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
from helpers.params import REPO

from taxadiffusion.analysis.aggregate import _setting_key, aggregate, collect, git_reader, main, run, setting_labels
from taxadiffusion.analysis.expshow import ExpSource
from taxadiffusion.core.errors import UserError

LEVELS = ("class", "species")


def _rev(n: int) -> str:
    return f"{n:040x}"


def _params(seed, scale=2, methods=("taxadiffusion", "lora")):
    return {"seed": seed, "guidance_scale": scale, "methods": list(methods), "train": {"steps": 150},
            "levels": {"class": {"parent": "base"}, "species": {"parent": "class"}}}


def _all_json(fid, acc_species, scale=2.0):
    """evaluate's ``metrics/classes/all.json`` (counts, scale, per-backbone numbers)."""
    return {"images": 30, "species": 10, "real_images": 40, "scale": float(scale),
            "probe": {"fid": fid, "dist": 0.4, "acc": {"class": 0.9, "species": acc_species}}, "fid_small_sample": True}


def _summary(fid, acc_species, rare_species_acc=None):
    """A ``summary.json`` (only what aggregate reads: ``overall``), with the rarity split when given."""
    probe = {"fid": fid, "fid_class_mean": fid + 1, "dist": 0.4, "acc": {"class": 0.9, "species": acc_species},
             "unseen": {}, "real_test_acc": {"class": 1.0, "species": 0.5}}
    if rare_species_acc is not None:
        probe["acc_by_rarity"] = {
            "1-2": {"train_images": [1, 2], "n_species": 4, "n_images": 12,
                    "acc": {"class": 0.8, "species": rare_species_acc}},
            ">20": {"train_images": [21, None], "n_species": 6, "n_images": 18, "acc": {"class": 1.0, "species": 0.5}},
        }
    return json.dumps({"data": {}, "overall": {"probe": probe}, "per_class": {}, "per_level": {}})


def _entry(rev, name, params, all_json, error=None):
    metrics = {"metrics/classes/all.json": {"data": all_json}} if all_json is not None else {}
    return {"rev": rev, "name": name, "error": error, "experiments": None,
            "data": {"rev": rev, "timestamp": "2026-11-25T19:57:29", "params": {"params.yaml": {"data": params}},
                     "metrics": metrics, "deps": {}, "outs": {}, "meta": {}}}


def _exp(rev, name, params, all_json, state="success"):
    error = {"msg": "Experiment run failed", "type": ""} if state == "failed" else None
    return {"revs": [_entry(rev, name, params, all_json, error)], "name": name,
            "executor": {"state": state, "name": "dvc-task" if state == "success" else None,
                         "local": {"root": None, "log": None, "pid": None, "returncode": None, "task_id": rev}}}


def exp_show_doc() -> list:
    """Setting A (scale 2): seeds 0, 1, 2 (seed 0 also as the baseline commit); setting B (scale 6): seeds 0, 1;
    a failed and a queued experiment."""
    base = _entry(_rev(1), "main", _params(0), _all_json(99.0, 0.99))  # the same run as a-s0: dropped
    base["experiments"] = [
        _exp(_rev(10), "a-s0", _params(0), _all_json(10.0, 0.1)),
        _exp(_rev(11), "a-s1", _params(1), _all_json(12.0, 0.2)),
        _exp(_rev(12), "a-s2", _params(2), _all_json(14.0, 0.3)),
        _exp(_rev(20), "b-s0", _params(0, scale=6), _all_json(20.0, 0.4, scale=6)),
        _exp(_rev(21), "b-s1", _params(1, scale=6), _all_json(30.0, 0.6, scale=6)),
        # dvc keeps the workspace's metrics in a failed experiment: they must not count
        _exp(_rev(13), "a-s3", _params(3), _all_json(10.0, 0.1), state="failed"),
        _exp(_rev(14), "a-s4", _params(4), None, state="queued"),
    ]
    workspace = _entry("workspace", None, _params(0), _all_json(1.0, 1.0))
    return [workspace, base]


def files_at_revs() -> dict:
    """What `git show <rev>:<path>` gives: a-s1 and a-s2 have the main summary (with the rarity split, so a-s0
    falls back to all.json and has none), every setting-A run has lora's summary except a-s2."""
    return {
        (_rev(11), "metrics/summary.json"): _summary(12.0, 0.2, rare_species_acc=0.0),
        (_rev(12), "metrics/summary.json"): _summary(14.0, 0.3, rare_species_acc=0.2),
        (_rev(10), "metrics/methods/lora/summary.json"): _summary(5.0, 0.5),
        (_rev(11), "metrics/methods/lora/summary.json"): _summary(7.0, 0.7),
        (_rev(20), "metrics/methods/lora/summary.json"): _summary(8.0, 0.8),
        (_rev(21), "metrics/methods/lora/summary.json"): _summary(8.0, 0.8),
    }


def _reader(files: dict):
    return lambda rev, path: files.get((rev, path))


def _stat(table, setting, method, metric):
    rows = table[(table.setting == setting) & (table.method == method) & (table.metric == metric)]
    assert len(rows) == 1, (setting, method, metric, rows)
    return rows.iloc[0]


def test_mean_sd_n_per_setting_method_and_metric_and_counted_skips(tmp_path):
    doc = tmp_path / "exp.json"
    doc.write_text(json.dumps(exp_show_doc()))
    table, skipped = run(tmp_path / "seeds.md", ExpSource(json_file=doc), read=_reader(files_at_revs()))
    assert set(table.setting) == {"guidance_scale=2", "guidance_scale=6"}  # only the param that differs names it
    a = _stat(table, "guidance_scale=2", "taxadiffusion", "probe.fid")
    assert (a["mean"], a["sd"], a["n"], a["seeds"]) == (12.0, 2.0, 3, "0 1 2")  # the baseline's 99 is not in
    acc = _stat(table, "guidance_scale=2", "taxadiffusion", "probe.acc.species")
    assert math.isclose(acc["mean"], 0.2) and math.isclose(acc["sd"], 0.1) and acc["level"] == "species"
    b = _stat(table, "guidance_scale=6", "taxadiffusion", "probe.fid")
    assert (b["mean"], b["n"]) == (25.0, 2) and math.isclose(b["sd"], math.sqrt(50))
    lora = _stat(table, "guidance_scale=2", "lora", "probe.fid")
    assert (lora["mean"], lora["n"], lora["seeds"]) == (6.0, 2, "0 1")
    rare = _stat(table, "guidance_scale=2", "taxadiffusion", "probe.acc_by_rarity.1-2.acc.species")
    assert (rare["bucket"], rare["level"], rare["n"], rare["seeds"]) == ("1-2", "species", 2, "1 2")
    assert math.isclose(rare["mean"], 0.1) and math.isclose(rare["sd"], math.sqrt(0.02))
    # only the numbers of the tables: no counts, scale, class means or the probe's own real-test accuracy
    not_numbers = "^images$|^species$|scale|fid_class_mean|real_test_acc|unseen|train_images"
    assert not table.metric.str.contains(not_numbers).any()
    assert skipped == {"failed": 1, "still queued": 1, "same params and seed as another experiment": 1,
                       "no metrics/methods/lora/summary.json": 1}

    csv = pd.read_csv(tmp_path / "seeds.csv")
    assert list(csv.columns) == ["setting", "guidance_scale", "method", "metric", "bucket", "level", "mean", "sd",
                                 "n", "seeds"]
    assert len(csv) == len(table)
    md = (tmp_path / "seeds.md").read_text()
    assert ("| guidance_scale=2 | taxadiffusion | 3 | 0, 1, 2 | 12.00 ± 2.00 | 0.4000 ± 0.0000 | 0.900 ± 0.000 "
            "| 0.200 ± 0.100 |") in md
    assert "| guidance_scale=6 | lora | 2 | 0, 1 | 8.00 ± 0.00 |" in md
    assert ("| guidance_scale=2 | taxadiffusion | 1-2 | 2 | 1, 2 | 4 ± 0 | 12 ± 0 | 0.800 ± 0.000 "
            "| 0.100 ± 0.141 |") in md
    assert ("Skipped: 1 failed, 1 no metrics/methods/lora/summary.json, 1 same params and seed as another experiment, "
            "1 still queued.") in md


def test_one_seed_has_no_sd_and_one_setting_is_named_so(tmp_path):
    doc = exp_show_doc()
    doc[1]["experiments"] = doc[1]["experiments"][:1]
    records, skipped = collect(doc, _reader({}))
    assert [(r["experiment"], r["method"]) for r in records] == [("a-s0", "taxadiffusion")]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(doc))
    table, _ = run(tmp_path / "one.csv", ExpSource(json_file=path), read=_reader({}))
    row = _stat(table, "(one setting)", "taxadiffusion", "probe.fid")
    assert (row["mean"], row["n"]) == (10.0, 1) and pd.isna(row["sd"])
    assert "| (one setting) | taxadiffusion | 1 | 0 | 10.00 |" in (tmp_path / "one.md").read_text()


def test_other_params_make_other_settings(tmp_path):
    """A param other than seed (train.steps here) separates settings; list params (methods) too."""
    doc = exp_show_doc()
    doc[1]["experiments"] = doc[1]["experiments"][:3]
    doc[1]["experiments"][2]["revs"][0]["data"]["params"]["params.yaml"]["data"]["train"]["steps"] = 300
    doc[1]["experiments"][1]["revs"][0]["data"]["params"]["params.yaml"]["data"]["methods"] = ["taxadiffusion"]
    records, _ = collect(doc, _reader({}))
    labels, varying = setting_labels(records)
    assert varying == ["methods", "train.steps"]
    assert sorted(set(labels.values())) == ['methods=["taxadiffusion", "lora"]; train.steps=150',
                                            'methods=["taxadiffusion", "lora"]; train.steps=300',
                                            'methods=["taxadiffusion"]; train.steps=150']


def test_ignored_params_pool_settings_and_each_method_counts_its_own_seeds(tmp_path):
    """`--ignore methods`: a seed that ran fewer methods joins the others' setting; each method's n is the
    number of seeds it ran in (the study: all seven methods at seed 0, five at seeds 1 and 2)."""
    doc = exp_show_doc()
    doc[1]["experiments"] = doc[1]["experiments"][:3]  # setting A, seeds 0, 1, 2 (and the baseline, seed 0)
    doc[1]["experiments"][2]["revs"][0]["data"]["params"]["params.yaml"]["data"]["methods"] = ["taxadiffusion"]
    records, skipped = collect(doc, _reader(files_at_revs()))
    assert len(set(setting_labels(records)[0].values())) == 2  # without --ignore: two settings
    records, pooled_skips = collect(doc, _reader(files_at_revs()), ignore=("methods",))
    assert pooled_skips == skipped  # pooling drops nothing
    labels, varying = setting_labels(records)
    assert varying == [] and len(set(labels.values())) == 1
    seeds = {m: sorted(r["seed"] for r in records if r["method"] == m) for m in {r["method"] for r in records}}
    assert seeds == {"taxadiffusion": [0, 1, 2], "lora": [0, 1]}
    table = aggregate(records)
    n = table.query("method == 'lora'")["n"]
    assert len(n) and (n == 2).all()
    assert _setting_key({"seed": 1, "train": {"steps": 3}, "x": 1}, ("train",)) == (("x", "1"),)


def test_settings_sort_numerically_and_the_main_pipeline_always_counts():
    """Scale 2 before 10; `methods` without taxadiffusion still has the main pipeline's row (evaluate ran)."""
    base = _entry(_rev(1), "main", _params(0, scale=10, methods=["lora"]), _all_json(1.0, 0.1, scale=10))
    base["experiments"] = [_exp(_rev(2), "s2", _params(0, scale=2, methods=["lora"]), _all_json(2.0, 0.1))]
    records, skipped = collect([base], _reader({}))
    table = aggregate(records)
    assert list(dict.fromkeys(table.setting)) == ["guidance_scale=2", "guidance_scale=10"]
    assert set(table.method) == {"taxadiffusion"} and skipped == {"no metrics/methods/lora/summary.json": 2}


def test_stale_metrics_are_skipped():
    doc = exp_show_doc()
    doc[1]["experiments"][1]["revs"][0]["data"]["metrics"]["metrics/classes/all.json"]["data"]["scale"] = 6.0
    _, skipped = collect(doc, _reader({}))
    assert skipped["metrics computed at another scale"] == 1


def test_nothing_usable_is_one_line_error():
    doc = exp_show_doc()
    doc[1]["experiments"] = doc[1]["experiments"][5:]  # the failed and the queued one
    doc[1]["data"]["metrics"] = {}
    with pytest.raises(UserError, match=r"no experiment .*skipped: 1 failed, .*dvc exp run --queue -S seed=0,1,2"):
        collect(doc, _reader({}))


@pytest.mark.parametrize("content, args, message", [
    ("[]", [], "error: no experiment with params.yaml and metrics"),
    ("{}", [], "expected a JSON list of revisions"),
    (None, ["--out", "seeds.png"], "--out seeds.png: use a .md or .csv"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, content, args, message):
    doc = tmp_path / "exp.json"
    doc.write_text(json.dumps(exp_show_doc()) if content is None else content)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--json", str(doc), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_cli_reads_the_summaries_at_each_experiments_commit(tmp_path):
    """The real path: `git show <rev>:metrics/...` in a repository whose commits hold each seed's summaries."""
    repo = tmp_path / "repo"
    (repo / "metrics" / "methods" / "lora").mkdir(parents=True)
    _git(repo, "init", "-q")
    revs = []
    for seed, (fid, lora_fid) in enumerate([(10.0, 5.0), (12.0, 7.0)]):
        (repo / "metrics" / "summary.json").write_text(_summary(fid, 0.1 * (seed + 1), rare_species_acc=0.1 * seed))
        (repo / "metrics" / "methods" / "lora" / "summary.json").write_text(_summary(lora_fid, 0.5))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"seed {seed}")
        revs.append(_git(repo, "rev-parse", "HEAD"))
    base = _entry(revs[0], "main", _params(0), _all_json(10.0, 0.1))
    base["experiments"] = [_exp(revs[1], "s1", _params(1), _all_json(12.0, 0.2))]
    (tmp_path / "exp.json").write_text(json.dumps([base]))
    assert git_reader(repo)(revs[0], "metrics/nope.json") is None
    proc = subprocess.run([sys.executable, "-m", "taxadiffusion", "aggregate", "--json", str(tmp_path / "exp.json"),
                           "--out", "metrics/seeds.md"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    csv = pd.read_csv(repo / "metrics" / "seeds.csv")
    lora = csv[(csv.method == "lora") & (csv.metric == "probe.fid")].iloc[0]
    assert (lora["mean"], lora["n"]) == (6.0, 2) and math.isclose(lora["sd"], math.sqrt(2))
    rare = csv[(csv.method == "taxadiffusion") & (csv.metric == "probe.acc_by_rarity.1-2.acc.species")].iloc[0]
    assert math.isclose(rare["mean"], 0.05) and rare["n"] == 2
    md = (repo / "metrics" / "seeds.md").read_text()
    assert "## Probe accuracy of generated images by rarity" in md
    assert "| (one setting) | lora | 2 | 0, 1 | 6.00 ± 1.41 |" in md
    assert "every setting has one seed" not in proc.stderr and "Skipped: none." in md


def test_a_snapshot_gives_the_same_tables_without_dvc_or_git(tmp_path):
    """--save-snapshot keeps what was read (exp show document, each summary at its commit); --snapshot re-derives
    the same tables from those files alone, in a folder that is no repository."""
    doc = exp_show_doc()
    doc[1]["data"]["deps"] = {"data/shards": {"hash": "md5", "md5": "x" * 32}}  # dropped from the snapshot
    (tmp_path / "exp.json").write_text(json.dumps(doc))
    files = files_at_revs()
    direct, skipped = run(tmp_path / "a" / "seeds.md", ExpSource(tmp_path / "exp.json"), read=_reader(files),
                          save_snapshot=tmp_path / "snap")
    kept = sorted(p.relative_to(tmp_path / "snap" / "files").as_posix()
                  for p in (tmp_path / "snap" / "files").rglob("*.json"))
    assert kept == sorted(f"{rev}/{path}" for rev, path in files
                          if rev != _rev(20) or path.endswith("lora/summary.json"))
    saved = json.loads((tmp_path / "snap" / "exp_show.json").read_text())
    assert "deps" not in saved[1]["data"] and saved[1]["experiments"][0]["revs"][0]["data"]["params"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again, skipped_again = run(elsewhere / "seeds.md", ExpSource(cwd=elsewhere), from_snapshot=tmp_path / "snap",
                               read=lambda rev, path: pytest.fail("read outside the snapshot"))
    pd.testing.assert_frame_equal(direct, again)
    assert skipped == skipped_again
    assert (tmp_path / "a" / "seeds.md").read_text() == (elsewhere / "seeds.md").read_text()
    with pytest.raises(UserError, match="give one"):
        run(elsewhere / "x.md", ExpSource(tmp_path / "exp.json"), from_snapshot=tmp_path / "snap")
    with pytest.raises(UserError, match=r"nowhere/exp_show.json: not found; --snapshot takes a folder"):
        run(elsewhere / "x.md", from_snapshot=tmp_path / "nowhere")


def test_paired_differences_take_each_seed_against_the_main_pipeline_of_the_same_experiment(tmp_path):
    """lora minus taxadiffusion per experiment: a-s0 (5 - 10 = -5; a-s0 has no main summary, so its all.json),
    a-s1 (7 - 12 = -5); a-s2 has no lora summary. Setting B: 8 - 20 and 8 - 30."""
    doc = tmp_path / "exp.json"
    doc.write_text(json.dumps(exp_show_doc()))
    run(tmp_path / "seeds.md", ExpSource(json_file=doc), read=_reader(files_at_revs()))
    diffs = pd.read_csv(tmp_path / "seeds_paired.csv")
    assert set(diffs.method) == {"lora"} and set(diffs.vs) == {"taxadiffusion"}
    fid = diffs[(diffs.setting == "guidance_scale=2") & (diffs.metric == "probe.fid")].iloc[0]
    assert (fid["mean"], fid["sd"], fid["n"], fid["seeds"]) == (-5.0, 0.0, 2, "0 1")
    acc = diffs[(diffs.setting == "guidance_scale=2") & (diffs.metric == "probe.acc.species")].iloc[0]
    assert math.isclose(acc["mean"], 0.45) and math.isclose(acc["sd"], math.sqrt(0.005))  # 0.5 - 0.1, 0.7 - 0.2
    assert fid["better"] == 2 and acc["better"] == 2  # a lower FID and a higher accuracy both count as better
    b = diffs[(diffs.setting == "guidance_scale=6") & (diffs.metric == "probe.fid")].iloc[0]
    assert (b["mean"], b["n"]) == (-17.0, 2) and math.isclose(b["sd"], math.sqrt(50))
    assert not diffs.metric.str.endswith(("n_images", "n_species")).any()
    md = (tmp_path / "seeds.md").read_text()
    assert "## Paired differences against taxadiffusion" in md
    assert "| guidance_scale=2 | lora | 2 | 0, 1 | -5.00 ± 0.00 [2/2] |" in md and "Δ FID (probe)" in md


def test_the_committed_study_snapshot_gives_the_published_tables(tmp_path):
    """docs/study-seeds.md is what `aggregate --snapshot docs/study --ignore methods` writes from the committed
    snapshot of the study (docs/results.md): the published numbers come from those experiments, not by hand."""
    out = tmp_path / "seeds.md"
    run(out, ExpSource(cwd=tmp_path), from_snapshot=REPO / "docs" / "study", ignore=("methods",))
    assert out.read_text() == (REPO / "docs" / "study-seeds.md").read_text()
    table = pd.read_csv(tmp_path / "seeds.csv")
    assert set(table.n) == {3}  # every row of the study has three seeds
