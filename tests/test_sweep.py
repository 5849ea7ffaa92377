"""`taxadiffusion sweep`: guidance-scale sweep plot + CSV from `dvc exp show --json`.

The document below has the exact shape dvc 3.67.1 writes (captured from a real `dvc exp run` / `dvc exp run
--queue` + `dvc queue start` in a scratch repo): a list of revisions, each ``{rev, name, data: {rev, timestamp,
params: {file: {data}}, metrics: {file: {data}}, deps, outs, meta}, error, experiments}``, experiments as
``{revs: [...], executor: {state, name, local}, name}``. A failed queued experiment keeps ``error`` and the
*workspace's* metrics at queue time; a queued one has empty metrics. The real `dvc` path runs in
tests/test_pipeline_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from helpers.params import REPO

from taxadiffusion.analysis.sweep import collect, main
from taxadiffusion.core.errors import UserError

STEPS = 250


def _summary(scale, fid, acc):
    """evaluate's ``metrics/classes/all.json`` (the all-classes row the sweep reads), with a bool leaf as the real
    file."""
    return {"images": 36, "species": 12, "real_images": 40, "scale": float(scale),
            "probe": {"fid": fid, "dist": 0.7, "acc": {"class": 0.5, "species": acc}}, "fid_small_sample": False}


def _data(rev, scale, summary, steps=STEPS):
    return {
        "rev": rev,
        "timestamp": "2026-11-25T19:57:29",
        "params": {"params.yaml": {"data": {"seed": 0, "guidance_scale": scale, "train": {"steps": steps}}}},
        "metrics": {"metrics/classes/all.json": {"data": summary}} if summary is not None else {},
        "deps": {"stages/generate.py": {"hash": "627043fdf4cecd8530179140cd4cf644", "size": 291, "nfiles": None}},
        "outs": {},
        "meta": {},
    }


def _exp(name, rev, scale, summary, state="success", error=None, steps=STEPS):
    log = f"/repo/.dvc/tmp/exps/run/{rev}/{rev}.out"
    return {
        "revs": [{"rev": rev, "name": name, "data": _data(rev, scale, summary, steps), "error": error,
                  "experiments": None}],
        "executor": {"state": state, "name": None if state != "success" else "dvc-task",
                     "local": {"root": None, "log": None if state == "queued" else log, "pid": None,
                               "returncode": None if state == "queued" else (0 if state == "success" else 255),
                               "task_id": rev}},
        "name": name,
    }


def exp_show_doc() -> list:
    workspace = {"rev": "workspace", "name": None, "data": _data("workspace", 8, _summary(8, 21.0, 0.03)),
                 "error": None, "experiments": None}
    baseline = {
        "rev": "1168ba61f6023ab180648c93a10d616db3aa62e1", "name": "master",
        "data": _data("1168ba61f6023ab180648c93a10d616db3aa62e1", 6, _summary(6, 15.0, 0.25)),
        "error": None,
        "experiments": [
            _exp("scary-wise", "59a50d1dc57bf5828b8401e887f76c30e7bcdf9f", 0, _summary(0, 40.0, 0.02)),
            _exp("lushy-hake", "fec6f789cbb6f471351abb580f6832d772ab25ec", 2, _summary(2, 30.0, 0.10)),
            _exp("dutch-vina", "c74dade7572b2b445855f4acf89ebe0a9d626450", 8, _summary(8, 21.0, None)),  # fid None
            _exp("more-steps", "aa74dade7572b2b445855f4acf89ebe0a9d62645", 8, _summary(8, 19.0, 0.30), steps=500),
            # failed: dvc keeps the metrics of the workspace it was queued from (scale 6 here) -> must not count
            _exp("dishy-tods", "18965796456d5de34ef841631da959b62a218370", 4, _summary(6, 15.0, 0.25),
                 state="failed", error={"msg": "Experiment run failed", "type": ""}),
            _exp("slow-ones", "2e1553d5d516b8f5f756e8a26e474182cee8f8d6", 10, None, state="queued"),
            # finished, but its metrics were computed at another scale (stale metrics file)
            _exp("stale-mets", "bb1553d5d516b8f5f756e8a26e474182cee8f8d6", 10, _summary(6, 15.0, 0.25)),
        ],
    }
    return [workspace, baseline]


def test_collect_keeps_finished_experiments_and_counts_the_rest():
    table, skipped = collect(exp_show_doc())
    assert table["experiment"].tolist() == ["scary-wise", "lushy-hake", "master", "dutch-vina", "more-steps"]
    assert table["guidance_scale"].tolist() == [0.0, 2.0, 6.0, 8.0, 8.0]
    assert table["probe.fid"].tolist() == [40.0, 30.0, 15.0, 21.0, 19.0]
    assert table.loc[table.experiment == "dutch-vina", "probe.acc.species"].isna().all()
    assert table.loc[table.experiment == "master", "kind"].item() == "baseline"
    assert set(table["baseline"]) == {"master"}
    # an experiment that also changed a training param is flagged, the others are not
    assert table.set_index("experiment")["changed"].to_dict() == {
        "scary-wise": "", "lushy-hake": "", "master": "", "dutch-vina": "", "more-steps": "train.steps=500"}
    assert skipped == {"failed": 1, "still queued": 1, "metrics/classes/all.json computed at another scale": 1}


def test_collect_workspace_only_on_request():
    table, _ = collect(exp_show_doc(), include_workspace=True)
    assert "workspace" in table["experiment"].tolist()
    assert table.loc[table.experiment == "workspace", "kind"].item() == "workspace"


def test_collect_no_experiments_is_one_clear_error():
    doc = exp_show_doc()[:1]  # only the workspace row, as in a repo with nothing committed
    with pytest.raises(UserError, match=r"no experiment with params.yaml:guidance_scale .*dvc exp run --queue"):
        collect(doc)


def test_collect_missing_metric_names_it_and_lists_available():
    with pytest.raises(UserError, match=r"metric 'inception.fid' not found .*probe.fid"):
        collect(exp_show_doc(), ["inception.fid"])


def test_cli_writes_plot_and_csv(tmp_path):
    doc = tmp_path / "exp.json"
    doc.write_text(json.dumps(exp_show_doc()))
    out = tmp_path / "plots" / "guidance_sweep.png"
    proc = subprocess.run(
        [sys.executable, "-m", "taxadiffusion", "sweep", "--json", str(doc), "--out", str(out),
         "--metric", "probe.fid", "--metric", "probe.dist"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert list(csv.columns) == ["experiment", "rev", "kind", "baseline", "guidance_scale",
                                 "probe.fid", "probe.dist", "changed"]
    assert csv["guidance_scale"].tolist() == [0.0, 2.0, 6.0, 8.0, 8.0]
    assert "skipped" in proc.stderr and "'failed': 1" in proc.stderr


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("[]", [], "error: no experiment with params.yaml:guidance_scale"),
        ("{not json", [], "exp.json: not valid JSON (line 1"),
        ("{}", [], "expected a JSON list of revisions"),
        (None, ["--metric", "nope"], "error: metrics/classes/all.json: metric 'nope' not found"),
        (None, ["--out", "sweep.txt"], "--out sweep.txt: use a .png, .svg or .pdf"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, content, args, message):
    doc = tmp_path / "exp.json"
    doc.write_text(json.dumps(exp_show_doc()) if content is None else content)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["--json", str(doc), "--out", "s.png", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "s.png").exists()


def test_cli_missing_json_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["--json", "nope.json"])
    assert capsys.readouterr().err.strip() == \
        "error: nope.json: not found (write it with: dvc exp show --json > nope.json)"


def test_collect_reads_the_headline_metrics_file_of_newer_experiments():
    """evaluate now declares metrics/headline.json (the pooled row) as its DVC metrics; older experiments, like
    the committed study, have the same row as metrics/classes/all.json: both are read."""
    doc = exp_show_doc()
    renamed = json.loads(json.dumps(doc).replace("metrics/classes/all.json", "metrics/headline.json"))
    table, skipped = collect(renamed)
    old, _ = collect(doc)
    assert table["probe.fid"].tolist() == old["probe.fid"].tolist() == [40.0, 30.0, 15.0, 21.0, 19.0]
    assert skipped["metrics/headline.json computed at another scale"] == 1
