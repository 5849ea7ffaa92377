"""The `report` stage: one self-contained HTML page with the tables, charts and grids of `evaluate`."""

from __future__ import annotations

import base64
import io
import os
import re

import torch
from PIL import Image

from taxadiffusion.metrics.evaluate import evaluate
from taxadiffusion.metrics.probe import fit_probe_on_shards
from test_metrics_data import (LEVELS, make_params, run_stage, run_stage_here, write_generated, write_params_yaml,
                               write_shards)

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


def test_report_stage_writes_self_contained_html(tmp_path):
    shards, gen = write_shards(tmp_path), write_generated(tmp_path)
    params = make_params(tmp_path, min_images_for_fid=7)
    fit_probe_on_shards(shards, tmp_path / "probe", LEVELS, params.probe)
    summary = evaluate(params, shards, gen, tmp_path / "probe", tmp_path / "metrics")
    out = tmp_path / "reports" / "index.html"
    proc = run_stage("report.py", "--params", write_params_yaml(tmp_path), "--metrics", tmp_path / "metrics",
                     "--out", out, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    for text in ("Per class (Table S2 layout)", "FID (probe)", "Acc species (probe)", "Per taxonomic level",
                 "Aves", "Reptilia", "†", "sampled with pndm, 10 steps, taxaguide scale 6.0"):
        assert text in html, text
    fid = summary["per_class"]["Aves"]["probe"]["fid"]
    assert f"{fid:.2f}" in html
    images = re.findall(r"src='data:image/png;base64,([^']+)'", html)
    # One chart per plotted column (fid, acc x 5 levels, dist) + one grid per class, all decodable PNGs.
    assert len(images) == 1 + len(LEVELS) + 1 + 2
    for b64 in images:
        Image.open(io.BytesIO(base64.b64decode(b64))).verify()
    assert "src='http" not in html and "src=\"http" not in html  # readable offline


def test_report_without_metrics_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = run_stage_here("report.py", "--params", write_params_yaml(tmp_path), "--metrics", tmp_path / "none",
                               "--out", tmp_path / "index.html", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert "summary.json: not found (run the evaluate stage first" in err
