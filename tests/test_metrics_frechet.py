"""Fréchet distance: zero on itself, symmetric, and equal to torchmetrics' FID on the same features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.backbones import IdentityFeatures
from torchmetrics.image.fid import FrechetInceptionDistance

from taxadiffusion.metrics.frechet import GaussianStats, frechet_distance, frechet_from_stats

torch.set_num_threads(1)




def torchmetrics_fid(fa: np.ndarray, fb: np.ndarray) -> float:
    metric = FrechetInceptionDistance(feature=IdentityFeatures(fa.shape[1]), normalize=True)
    metric.set_dtype(torch.float64)
    metric.update(torch.from_numpy(fa), real=True)
    metric.update(torch.from_numpy(fb), real=False)
    return float(metric.compute())


@pytest.mark.parametrize("n1,n2,d", [(300, 200, 8), (12, 9, 64)])  # full-rank (stats) and low-rank (features) paths
def test_agrees_with_torchmetrics(n1, n2, d):
    rng = np.random.default_rng(0)
    fa = rng.normal(size=(n1, d))
    fb = rng.normal(0.3, 1.5, size=(n2, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    ours = frechet_distance(fa, fb)
    assert ours == pytest.approx(torchmetrics_fid(fa, fb), rel=1e-6, abs=1e-8)
    assert ours == pytest.approx(frechet_distance(fb, fa), rel=1e-9)  # symmetric
    assert ours > 1.0


def test_zero_on_itself_and_both_paths_agree():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 16))
    assert abs(frechet_distance(f, f)) < 1e-9
    g = rng.normal(1.0, 2.0, size=(30, 16))
    full = frechet_from_stats(GaussianStats.from_features(f), GaussianStats.from_features(g))
    # 16 features, 30/40 samples -> the stats path; a 40-d padding of zeros forces the low-rank path.
    low = frechet_distance(np.pad(f, ((0, 0), (0, 40))), np.pad(g, ((0, 0), (0, 40))))
    assert full == pytest.approx(low, rel=1e-9)
    with pytest.raises(ValueError):
        frechet_distance(f[:1], g)
