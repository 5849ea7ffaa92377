"""Kernel Inception Distance (Bińkowski et al. 2018) between two feature sets, from the features the ``evaluate``
stage already holds (real ones from the cache, generated ones fresh).

KID = the unbiased estimate of MMD² with the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over
``subsets`` random subsets of ``m`` rows of each side (each subset drawn without replacement; subsets may overlap),
reported as mean ± sd (population sd, as both libraries). Unlike FID it has no bias from the sample size: its
expectation is the same at 20 images as at 20,000, only its spread grows (tests/test_metrics_sample_size.py checks it
equals torchmetrics' ``KernelInceptionDistance`` and torch-fidelity's KID on the same features).

The computation is torch-fidelity's own (``kid_features_to_metric``: numpy ``RandomState(seed)`` draws the subsets
with ``choice(n, m, replace=False)``, first the real side, then the generated side), in float64.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

KERNEL = {"kid_kernel": "poly", "kid_kernel_poly_degree": 3, "kid_kernel_poly_gamma": None,
          "kid_kernel_poly_coef0": 1.0}  # gamma None: 1 / feature dimension


def kid_subset_size(n_real: int, n_gen: int, cap: int) -> int:
    """The subset size: ``min(n_real, n_gen, evaluate.kid_subset_size)``."""
    return min(n_real, n_gen, cap)


def kid(fr: np.ndarray, fg: np.ndarray, subsets: int, cap: int, seed: int) -> Optional[dict]:
    """KID of real features ``fr`` against generated ``fg``: ``{"kid", "kid_sd", "kid_subset_size"}``; ``None``
    below two rows on a side (the unbiased estimate needs pairs). ``seed`` < 2**32 fixes the subsets."""
    m = kid_subset_size(len(fr), len(fg), cap)
    if m < 2:
        return None
    out = kid_features_to_metric(torch.from_numpy(np.asarray(fr, np.float64)),
                                 torch.from_numpy(np.asarray(fg, np.float64)),
                                 kid_subsets=subsets, kid_subset_size=m, rng_seed=seed, verbose=False, **KERNEL)
    return {"kid": float(out[KEY_METRIC_KID_MEAN]), "kid_sd": float(out[KEY_METRIC_KID_STD]), "kid_subset_size": m}
