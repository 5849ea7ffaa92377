"""What the ``evaluate`` stage compares with what: the real-image ceiling of the probe's accuracy by rarity uses
the real test images only (the probe never trained on them), whatever ``evaluate.real_split`` is."""

from __future__ import annotations

import os

import pytest
import torch
from helpers.metrics_world import LEVELS, metrics_params, trained_world

from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return trained_world(tmp_path_factory.mktemp("world"))


def test_real_ceiling_uses_test_images_only_whatever_the_reference(world, tmp_path):
    root, shards, gen, probe = world
    cfg = metrics_params(real_split="train+test").evaluate
    summary = evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / "metrics", tmp_path / "features"))
    assert summary["data"]["n_real"] == 45  # the reference: 9 real images per species (train + test)
    ceiling = summary["overall"]["probe"]["real_acc_by_rarity"]
    # the ceiling: the 15 test images only (the probe trained on the 30 others)
    assert sum(b["n_images"] for b in ceiling.values()) == 15 == ceiling["6-20"]["n_images"]
    assert ceiling["6-20"]["acc"]["species"] == summary["overall"]["probe"]["real_test_acc"]["species"]
