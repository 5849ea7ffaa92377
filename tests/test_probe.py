"""The probe: the `probe` stage trains on tiny shards, saves safetensors + config, and predicts taxa."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from helpers.metrics_world import LEVELS, WORLD, draw, metrics_params, write_generated, write_params_yaml, write_shards
from helpers.stages import run_repo_stage

from taxadiffusion.core.errors import UserError
from taxadiffusion.metrics.data import read_generated
from taxadiffusion.metrics.probe import load_probe, save_probe, train_probe

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


@pytest.mark.slow
def test_probe_stage_trains_and_predicts(tmp_path):
    shards = write_shards(tmp_path)
    out = tmp_path / "probe"
    proc = run_repo_stage("probe.py", "--params", write_params_yaml(tmp_path), "--shards", shards, "--out", out,
                          tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert (out / "probe.safetensors").is_file() and config["levels"] == LEVELS
    assert config["classes"]["species"] == sorted(w[-1] for w in WORLD) and config["resolution"] == 16
    assert config["test_acc"]["class"]["acc"] == 1.0 and config["test_acc"]["class"]["n"] == 3 * len(WORLD)
    assert config["test_acc"]["species"]["acc"] > 1 / len(WORLD)  # far above chance on held-out images

    probe = load_probe(out, LEVELS)
    gen, _ = read_generated(write_generated(tmp_path), LEVELS)
    feats = probe.features(gen.decode(range(len(gen))))
    assert feats.shape == (len(gen), config["feature_dim"])
    acc = probe.accuracy(feats, gen.lineages)
    assert acc["class"]["acc"] == 1.0 and acc["class"]["unseen"] == 0
    with pytest.raises(UserError, match=r"probe levels .* differ from params.yaml levels"):
        load_probe(out, ["class", "species"])
    with pytest.raises(UserError, match=r"probe.safetensors: not found \(train the probe first"):
        load_probe(tmp_path / "nothing", LEVELS)


def test_training_is_deterministic_and_unseen_taxa_are_counted(tmp_path, monkeypatch):
    import itertools

    import taxadiffusion.metrics.probe as probe_module

    clock = itertools.accumulate(itertools.count(1.0))  # 1, 3, 6, 10, ...: every run "takes" a different time
    monkeypatch.setattr(probe_module.time, "time", lambda: next(clock))
    images = np.stack([draw(w, i) for w in WORLD for i in range(4)])
    lineages = [w for w in WORLD for _ in range(4)]
    params = metrics_params()
    cfg = dataclasses.replace(params.probe, steps=5)
    a = train_probe(images, lineages, LEVELS, cfg, params.seed)
    b = train_probe(images, lineages, LEVELS, cfg, params.seed)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(va, vb), k
    # models/probe is a DVC output: the same inputs must give the same bytes (no run time in config.json)
    save_probe(a, tmp_path / "a")
    save_probe(b, tmp_path / "b")
    for name in ("config.json", "probe.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    unknown = [("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus cornix")]
    acc = a.accuracy(a.features(images[:1]), unknown)
    assert acc["species"] == {"acc": None, "n": 0, "unseen": 1} and acc["class"]["n"] == 1
