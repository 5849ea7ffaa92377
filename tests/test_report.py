"""The `report` stage: one self-contained HTML page, every section present, optional parts as notes.

``report_inputs`` (tests/helpers/report.py) builds every input the report can read (metrics from a real `evaluate`,
training logs in dvclive's layout, previews, a figures folder, a sweep, a two-row methods table, prepare's
report.json); the browser test (test_report_browser.py) opens the same page in Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re

import pytest
import torch
from helpers.metrics_world import LEVELS, write_params_yaml
from helpers.report import evaluated, full_report, report_inputs
from helpers.stages import run_repo_stage, run_stage_here
from PIL import Image

from taxadiffusion.core.errors import UserError
from taxadiffusion.figures import FIGURE_FILES, FIGURES_FILE
from taxadiffusion.report.build import SECTIONS, build_report

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
IMG = re.compile(r"src='data:image/png;base64,([^']+)'")


def sections(html: str) -> dict[str, str]:
    found = re.findall(r"<section id='([^']+)'>(.*?)</section>", html, flags=re.S)
    return dict(found)


def test_report_with_every_part(tmp_path):
    html = full_report(tmp_path).read_text()
    body = sections(html)
    assert list(body) == [sid for sid, _ in SECTIONS]
    notes = {sid: text for sid, text in body.items() if "class='note'" in text and sid not in
             ("classes", "levels", "overall", "previews", "methods", "samples")}  # those carry explanatory notes
    assert not notes, notes
    for text in ("Trained</b>: TaxaDiffusion", "class → order → family → genus → species",
                 "95 of 100 annotation rows", "How to read the numbers", "Paper counterpart: supplement Fig. S2",
                 "cosine 0.12 / euclidean 0.05",
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
    proc = run_repo_stage("report.py", "--params", write_params_yaml(tmp_path), "--metrics", metrics, "--out", out,
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
