"""LPIPS: the pairing rule (real_i vs generated_i, min(n_real, n_gen) pairs) and the trunk loaded from a local
torchvision state_dict through the real ``lpips`` model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers.backbones import write_random_alexnet

from taxadiffusion.core.errors import UserError
from taxadiffusion.metrics.lpips_metric import LPIPSMetric, pair_count

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def alex(tmp_path_factory):
    weights = write_random_alexnet(tmp_path_factory.mktemp("lpips") / "alexnet-owt-7be5be79.pth")
    return LPIPSMetric("alex", str(weights)), weights


def test_trunk_comes_from_the_file(alex):
    metric, weights = alex
    saved = torch.load(weights)
    assert torch.equal(metric.model.net.slice1[0].weight.cpu(), saved["features.0.weight"])
    assert torch.equal(getattr(metric.model.net.slice5, "10").bias.cpu(), saved["features.10.bias"])
    assert metric.info["weights"] == str(weights) and metric.name == "alex"


def test_pairing_rule(alex):
    metric, _ = alex
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    gen = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert pair_count(5, 3) == 3 == pair_count(3, 5)
    values = metric.paired(real, gen, batch_size=2)
    assert values.shape == (3,)
    # Pair i is real[i] with gen[i], whatever the batching.
    for i in range(3):
        assert values[i] == pytest.approx(metric.paired(real[i : i + 1], gen[i : i + 1])[0], rel=1e-5)
    assert metric.paired(real[:3], real[:3]) == pytest.approx(np.zeros(3), abs=1e-6)
    # Real images at another resolution are brought to the generated size.
    assert metric.paired(np.repeat(np.repeat(real, 2, 1), 2, 2), gen).shape == (3,)


def test_missing_or_wrong_trunk_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(UserError, match=r"^evaluate.lpips_weights: torchvision vgg weights not found .* "
                                        r"set evaluate.lpips_weights=/path/to/vgg16-397923af.pth$"):
        LPIPSMetric("vgg", None)
    bad = tmp_path / "bad.pth"
    torch.save({"classifier.1.weight": torch.zeros(2)}, bad)
    with pytest.raises(UserError, match=r"bad.pth is not a torchvision alex state_dict \(no 'features.0.weight'\)"):
        LPIPSMetric("alex", str(bad))
    with pytest.raises(UserError, match=r"evaluate.lpips_net: 'squeeze' is not one of"):
        LPIPSMetric("squeeze", None)
