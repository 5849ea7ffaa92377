"""The `report` stage: one self-contained HTML page, every section present, optional parts as notes.

``report_inputs`` builds every input the report can read (metrics from a real `evaluate`, training logs in
dvclive's layout, previews, a figures folder, a sweep, a two-row methods table, prepare's report.json); the
browser test (test_report_browser.py) opens the same page in Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_metrics_data import (
    LEVELS,
    metrics_params,
    run_stage,
    run_stage_here,
    write_generated,
    write_params_yaml,
    write_shards,
)

from taxadiffusion.core.errors import UserError
from taxadiffusion.figures import FIGURE_FILES, FIGURES_FILE
from taxadiffusion.metrics.evaluate import evaluate
from taxadiffusion.metrics.probe import fit_probe_on_shards
from taxadiffusion.report.build import SECTIONS, build_report
from taxadiffusion.training.previews import preview_name

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
IMG = re.compile(r"src='data:image/png;base64,([^']+)'")


def png(path: Path, size=(40, 30), colour=(200, 80, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def evaluated(tmp: Path) -> Path:
    shards, gen = write_shards(tmp), write_generated(tmp)
    params = metrics_params(min_images_for_fid=7)
    fit_probe_on_shards(shards, tmp / "probe", LEVELS, params.probe, params.seed)
    evaluate(params.evaluate, params.level_names, shards, gen, tmp / "probe", tmp / "metrics", tmp / "features")
    return tmp / "metrics"


def write_train_logs(train: Path, levels=LEVELS) -> None:
    """``metrics/train/<level>/``: dvclive's ``plots/metrics/loss.tsv``, ``run.json`` and two previews."""
    for k, lv in enumerate(levels):
        logs = train / lv
        (logs / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        loss = pd.DataFrame({"step": range(5), "loss": np.linspace(0.5, 0.2 + 0.01 * k, 5)})
        loss.to_csv(logs / "plots" / "metrics" / "loss.tsv", sep="\t", index=False)
        pd.DataFrame({"step": range(5), "lr": [1e-3] * 5}).to_csv(logs / "plots" / "metrics" / "lr.tsv", sep="\t",
                                                                  index=False)
        (logs / "run.json").write_text(json.dumps({"steps": 10, "final_loss": 0.2, "seconds_this_run": 1.5,
                                                   "samples_per_second": 30.0}))
        for step in (5, 10):
            png(logs / "plots" / "images" / preview_name(step), (64, 64), (40 * k, 100, 200))
    method = train / "methods" / "lora" / "plots" / "metrics"
    method.mkdir(parents=True)
    pd.DataFrame({"step": range(3), "loss": [0.4, 0.3, 0.25]}).to_csv(method / "loss.tsv", sep="\t", index=False)


def write_figures(out: Path) -> Path:
    """A figures folder as ``figures.build.make_figures`` writes it (test_figures.py checks the real one)."""
    for name in FIGURE_FILES.values():
        png(out / name, (120, 80))
    sil = {"cosine": 0.12, "euclidean": 0.05}
    info = {
        "s2": {"file": FIGURE_FILES["s2"], "level": "family", "n_taxa": 21, "n_classes": 4, "perplexity": 6.67,
               "dim": 64, "pooling": "mean over all token positions", "text_encoder": {"silhouette": sil},
               "condition_module": {"silhouette": {"cosine": 0.61, "euclidean": 0.4}}},
        "s5": {"file": FIGURE_FILES["s5"], "taxa": ["A/b/c/d/D e"] * 6, "scales": [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]},
        "s6": {"file": FIGURE_FILES["s6"], "group": "Aves/Passeriformes/Corvidae/Corvus", "group_level": "genus",
               "taxa": ["x", "y"]},
    }
    (out / FIGURES_FILE).write_text(json.dumps(info))
    return out


def report_inputs(tmp: Path) -> dict:
    """Every input the report reads, complete (see the module docstring)."""
    metrics = evaluated(tmp)
    write_train_logs(tmp / "train")
    png(metrics / "guidance_sweep.png", (200, 100))
    pd.DataFrame({"guidance_scale": [2.0, 6.0], "probe.fid": [8.1, 27.0]}).to_csv(metrics / "guidance_sweep.csv",
                                                                                   index=False)
    pd.DataFrame({"method": ["taxadiffusion", "lora"], "FID (probe)": [7.8, 7.9], "acc species (probe)": [0.2, 0.3]}
                 ).to_csv(metrics / "methods.csv", index=False)
    prepared = tmp / "report.json"
    prepared.write_text(json.dumps({"dataset": "synthetic", "rows_in": 100, "rows_kept": 95,
                                    "splits": {"train": 75, "test": 20}, "taxa": {"class": 2, "species": 5}}))
    return {"metrics": metrics, "figures_dir": write_figures(tmp / "figures"), "train_dir": tmp / "train",
            "prepared_report": prepared}


def full_report(tmp: Path) -> Path:
    inputs = report_inputs(tmp)
    run = {"dataset": "synthetic", "resolution": 16, "preset": "tiny", "pretrained": "assets/tiny-base",
           "levels": LEVELS, "steps": 10, "batch_size": 4, "lr_first": 1e-3, "lr": 1e-3, "seed": 0}
    metrics = inputs.pop("metrics")
    return build_report(metrics, tmp / "reports" / "index.html", run=run, **inputs)


def sections(html: str) -> dict[str, str]:
    found = re.findall(r"<section id='([^']+)'>(.*?)</section>", html, flags=re.S)
    return dict(found)


def test_report_with_every_part(tmp_path):
    html = full_report(tmp_path).read_text()
    body = sections(html)
    assert list(body) == [sid for sid, _ in SECTIONS]
    notes = {sid: text for sid, text in body.items() if "class='note'" in text and sid not in
             ("classes", "overall", "previews", "methods", "samples")}  # those carry explanatory notes
    assert not notes, notes
    for text in ("Trained</b>: TaxaDiffusion", "class → order → family → genus → species",
                 "95 of 100 annotation rows", "How to read the numbers", "Paper counterpart: supplement Fig. S2", "cosine 0.12 / euclidean 0.05",
                 "Paper counterpart: supplement Fig. S5", "s = 0, 2, 4, 6, 8, 10", "genus <i>Corvus</i>",
                 "Paper counterpart: supplement Fig. S6", "step-000010", "lora", "Acc species (probe)"):
        assert text in html, text
    images = IMG.findall(html)
    # charts: level accuracy, training loss and lr, 7 per-class bars; 10 previews, 3 figures, sweep, 2 grids
    assert len(images) == 3 + (1 + len(LEVELS) + 1) + 2 * len(LEVELS) + 3 + 1 + 2
    for b64 in images:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    assert "src='http" not in html and "<script" not in html  # offline, no scripts
    # the accuracy by rarity is a table of its own, not a dict printed into the overall table
    overall = body["overall"]
    assert "Probe accuracy by species rarity" in overall and "Training images per species" in overall
    assert "train_images" not in overall and "{" not in overall


def test_report_stage_without_optional_parts_notes_them(tmp_path):
    metrics = evaluated(tmp_path)
    out = tmp_path / "reports" / "index.html"
    proc = run_stage("report.py", "--params", write_params_yaml(tmp_path), "--metrics", metrics, "--out", out,
                     "--figures", tmp_path / "none", "--train-logs", tmp_path / "none",
                     "--prepared-report", tmp_path / "none.json", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    body = sections(html)
    assert list(body) == [sid for sid, _ in SECTIONS]
    for sid in ("training", "previews", "fig-s2", "fig-s5", "fig-s6", "sweep", "methods"):
        assert "class='note'" in body[sid] and "<img" not in body[sid], sid
    assert "dvc repro figures" in body["fig-s5"] and "0 method row(s)" in body["methods"]
    for text in ("Per class (Table S2 layout)", "FID (probe)", "Acc species (probe)", "Aves", "Reptilia", "†",
                 "sampled with pndm, 10 steps, taxaguide scale 6.0", "base model <code>tiny</code>"):
        assert text in html, text
    assert f"{json.loads((metrics / 'summary.json').read_text())['per_class']['Aves']['probe']['fid']:.2f}" in html
    # per-level accuracy chart, 7 per-class bars, 2 grids
    assert len(IMG.findall(html)) == 1 + (1 + len(LEVELS) + 1) + 2


def test_skipped_figure_is_a_note(tmp_path):
    inputs = report_inputs(tmp_path)
    info = json.loads((inputs["figures_dir"] / FIGURES_FILE).read_text())
    info["s6"] = {"skipped": "no genus with 2 or more test taxa of level 'species'"}
    (inputs["figures_dir"] / FIGURES_FILE).write_text(json.dumps(info))
    (inputs["figures_dir"] / FIGURE_FILES["s6"]).unlink()
    html = build_report(inputs.pop("metrics"), tmp_path / "index.html", **inputs).read_text()
    assert "Skipped: no genus with 2 or more test taxa" in sections(html)["fig-s6"]
    assert "Paper counterpart: supplement Fig. S5" in html


def test_report_without_metrics_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = run_stage_here("report.py", "--params", write_params_yaml(tmp_path), "--metrics", tmp_path / "none",
                               "--out", tmp_path / "index.html", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert "summary.json: not found (run the evaluate stage first" in err


@pytest.mark.parametrize("broken", ["loss.tsv", "run.json"])
def test_damaged_training_log_is_skipped_or_one_line(tmp_path, broken):
    inputs = report_inputs(tmp_path)
    path = inputs["train_dir"] / "class" / ("plots/metrics/loss.tsv" if broken == "loss.tsv" else "run.json")
    path.write_text("not\ta table\n" if broken == "loss.tsv" else "{broken")
    if broken == "loss.tsv":  # a curve that cannot be read is left out; the other levels are drawn
        html = build_report(inputs.pop("metrics"), tmp_path / "index.html", **inputs).read_text()
        assert "alt='training loss'" in sections(html)["training"]
    else:
        with pytest.raises(UserError, match=r"run.json: line 1 column 2: not valid JSON"):
            build_report(inputs.pop("metrics"), tmp_path / "index.html", **inputs)
