"""Fréchet distance between two feature sets (FID when the features are Inception pool3).

d² = ||mu1 - mu2||² + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^½)  (Heusel et al. 2017), with unbiased covariances as
torchmetrics and pytorch-fid use. Tr((S1 S2)^½) is computed without a general matrix square root:
- from statistics: Tr((S1 S2)^½) = Tr((R S2 R)^½) with R = S1^½, so two symmetric eigendecompositions
  (several times faster and more stable than scipy's ``sqrtm`` or torchmetrics' ``eigvals`` at 2048-d);
- from features when a side has fewer samples than dimensions (per-species FID): with centred feature matrices
  A (n1 x d) and B (n2 x d), the non-zero eigenvalues of S1 S2 are the squared singular values of
  A Bᵀ / sqrt((n1-1)(n2-1)), so the trace is their sum: exact and O(n1 n2 d).
Real-image features are cached per class (``cache``), so only the generated side is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GaussianStats:
    n: int
    mean: np.ndarray  # [d] float64
    cov: np.ndarray  # [d, d] float64, unbiased (n - 1)

    @classmethod
    def from_features(cls, features: np.ndarray) -> "GaussianStats":
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need at least 2 feature vectors, got shape {x.shape}")
        return cls(n=x.shape[0], mean=x.mean(0), cov=np.cov(x, rowvar=False))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_from_stats(a: GaussianStats, b: GaussianStats) -> float:
    """Fréchet distance from (n, mean, cov) statistics."""
    diff = a.mean - b.mean
    root = _psd_sqrt(a.cov)
    eig = np.linalg.eigvalsh(root @ b.cov @ root)
    tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * tr_sqrt)


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """Fréchet distance between feature sets ``[n1, d]`` and ``[n2, d]`` (each n >= 2)."""
    fa = np.asarray(fa, dtype=np.float64)
    fb = np.asarray(fb, dtype=np.float64)
    if fa.shape[0] < 2 or fb.shape[0] < 2:
        raise ValueError("Fréchet distance needs at least 2 samples on each side")
    d = fa.shape[1]
    if min(fa.shape[0], fb.shape[0]) > d // 2:
        return frechet_from_stats(GaussianStats.from_features(fa), GaussianStats.from_features(fb))
    ma, mb = fa.mean(0), fb.mean(0)
    ca, cb = fa - ma, fb - mb
    scale = np.sqrt((fa.shape[0] - 1) * (fb.shape[0] - 1))
    tr_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / scale
    tr_a = (ca * ca).sum() / (fa.shape[0] - 1)
    tr_b = (cb * cb).sum() / (fb.shape[0] - 1)
    diff = ma - mb
    return float(diff @ diff + tr_a + tr_b - 2.0 * tr_sqrt)
