"""Reductions shared by the per-class and the pooled metrics of the ``evaluate`` stage."""

from __future__ import annotations

from typing import Optional

import numpy as np

from taxadiffusion.metrics.frechet import frechet_distance


def finite_mean(values) -> Optional[float]:
    """Mean of the finite values; ``None`` (a dash in the tables) when there is none, e.g. a class without pairs."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def fid_or_none(fr: np.ndarray, fg: np.ndarray) -> Optional[float]:
    """Fréchet distance of real features ``fr`` and generated ``fg``; ``None`` below two images on a side, where
    a covariance does not exist."""
    return frechet_distance(fr, fg) if len(fr) >= 2 and len(fg) >= 2 else None
