"""Every input the `report` stage can read, complete: metrics from a real `evaluate` on the metric tests' world,
training logs in dvclive's layout with previews, a figures folder, a sweep, a two-row methods table and prepare's
report.json; and the whole report built from them (tests/test_report.py reads it, the browser test opens it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from taxadiffusion.figures import FIGURE_FILES, FIGURES_FILE
from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate
from taxadiffusion.metrics.probe import fit_probe_on_shards
from taxadiffusion.report.build import build_report
from taxadiffusion.training.previews import preview_name

from .metrics_world import LEVELS, metrics_params, write_generated, write_shards


def solid_png(path: Path, size=(40, 30), colour=(200, 80, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def evaluated(tmp: Path) -> Path:
    shards, gen = write_shards(tmp), write_generated(tmp)
    params = metrics_params(min_images_for_fid=7)
    fit_probe_on_shards(shards, tmp / "probe", LEVELS, params.probe, params.seed)
    evaluate(params.evaluate, params.level_names,
             EvaluatePaths(shards, gen, tmp / "probe", tmp / "metrics", tmp / "features"))
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
            solid_png(logs / "plots" / "images" / preview_name(step), (64, 64), (40 * k, 100, 200))
    method = train / "methods" / "lora" / "plots" / "metrics"
    method.mkdir(parents=True)
    pd.DataFrame({"step": range(3), "loss": [0.4, 0.3, 0.25]}).to_csv(method / "loss.tsv", sep="\t", index=False)


def write_figures(out: Path) -> Path:
    """A figures folder as ``figures.build.make_figures`` writes it (tests/test_figures.py checks the real one)."""
    for name in FIGURE_FILES.values():
        solid_png(out / name, (120, 80))
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
    solid_png(metrics / "guidance_sweep.png", (200, 100))
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
