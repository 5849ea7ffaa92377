"""Inception through the real torch-fidelity loader (the one torchmetrics' FID wraps) from a local weights file,
and the one-line error when a backbone's weights are missing (offline, nothing cached)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers.backbones import write_random_inception

from taxadiffusion.core.errors import UserError
from taxadiffusion.metrics.backbones import InceptionBackbone

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


def test_inception_loads_local_file_through_torch_fidelity(tmp_path):
    weights = write_random_inception(tmp_path / "weights-inception-2015-12-05-6726825d.pth")
    backbone = InceptionBackbone(str(weights))
    saved = torch.load(weights)["Conv2d_1a_3x3.conv.weight"].float()
    assert torch.equal(backbone.net.Conv2d_1a_3x3.conv.weight.cpu(), saved)  # the file's weights, not a download
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)  # resized to 299 inside
    feats = backbone.features(images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and not np.allclose(feats[0], feats[1])
    assert "tf1" in backbone.info["resize"] and "torch-fidelity" in backbone.info["impl"]
    # The same features torchmetrics' FrechetInceptionDistance extracts from this file (its antialias=False path).
    from torchmetrics.image.fid import NoTrainInceptionV3

    tm = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights), antialias=False).to(backbone.device)
    tm_feats = tm(torch.from_numpy(images).permute(0, 3, 1, 2).to(backbone.device)).double().cpu().numpy()
    assert np.allclose(tm_feats, feats, rtol=1e-5, atol=1e-12)


def test_missing_inception_weights_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached
    with pytest.raises(UserError) as err:
        InceptionBackbone(None)
    msg = str(err.value)
    assert msg.startswith("evaluate.inception_weights: Inception weights not found") and "\n" not in msg
    assert "set evaluate.inception_weights=/path/to/weights-inception-2015-12-05-6726825d.pth" in msg
    with pytest.raises(UserError, match=r"evaluate.inception_weights: .*no file at /nope.pth"):
        InceptionBackbone("/nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(2)}, bad)
    with pytest.raises(UserError, match=r"bad.pth is not a torch-fidelity InceptionV3 state_dict"):
        InceptionBackbone(str(bad))
