"""Nearest-neighbour metrics in a backbone's feature space (Euclidean distances, float64), per class:

- **precision / recall** (Kynkäänniemi et al. 2019, "Improved precision and recall"): each real image spans a
  ball reaching its k-th nearest real neighbour; precision = the fraction of generated images inside at least one
  real ball (are they realistic?), recall = the fraction of real images inside at least one generated ball (the
  same with the generated images' own k-NN radii: is the real variety covered?);
- **density / coverage** (Naeem et al. 2020): density = how many real balls hold a generated image on average,
  divided by k (1 when the generated images are distributed like the real ones; above 1 when they crowd the real
  modes), coverage = the fraction of real balls that hold at least one generated image.
  These are the definitions of NAVER's ``prdc`` package (``compute_prdc``; strict ``<``, the k-th neighbour
  counted without the point itself), cross-checked in tests/test_metrics_sample_size.py; one k for all four;
- **memorisation**: each generated image's distance to its nearest *training* image of the class, against the
  same distance for the class's real *test* images (which the model never saw): ``nn_train_ratio`` = median over
  the generated / median over the test images (well below 1: the generated images sit closer to training images
  than unseen real ones do), ``closer_than_test_p5`` = the fraction of generated images nearer to a training image
  than the 5th percentile of the test images' distances (about 0.05 when there is no copying).

Distances are computed in row chunks (``‖a‖² + ‖b‖² − 2abᵀ`` through BLAS), so thousands of images a side never
hold a full distance matrix in memory.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

CHUNK_ENTRIES = 1 << 24  # distances held at a time (128 MiB of float64)


def _chunks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Row chunks of the Euclidean distance matrix of ``a`` [n, d] and ``b`` [m, d]: (rows of a, distances)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bb = (b * b).sum(1)
    step = max(1, CHUNK_ENTRIES // max(1, len(b)))
    for start in range(0, len(a), step):
        rows = slice(start, min(start + step, len(a)))
        x = a[rows]
        sq = (x * x).sum(1)[:, None] + bb[None, :] - 2.0 * (x @ b.T)
        yield rows, np.sqrt(np.clip(sq, 0.0, None))


def kth_neighbour(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest other row of ``x`` (itself, at distance 0, not counted)."""
    out = np.empty(len(x))
    for rows, d in _chunks(x, x):
        out[rows] = np.partition(d, k, axis=1)[:, k]
    return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """Precision, recall, density, coverage of ``fake`` against ``real``; ``None`` each where a side has no k-th
    neighbour (k or fewer rows)."""
    keys = ("precision", "recall", "density", "coverage")
    if len(real) <= k or len(fake) <= k:
        return dict.fromkeys(keys)
    r_radius, f_radius = kth_neighbour(real, k), kth_neighbour(fake, k)
    inside = np.zeros(len(fake))  # real balls holding each generated image
    covered_by_fake = np.zeros(len(real), bool)  # real image inside a generated ball
    nearest_fake = np.empty(len(real))
    for rows, d in _chunks(real, fake):  # d: [real rows, fake]
        inside += (d < r_radius[rows, None]).sum(0)
        covered_by_fake[rows] = (d < f_radius[None, :]).any(1)
        nearest_fake[rows] = d.min(1)
    return {"precision": float((inside > 0).mean()), "recall": float(covered_by_fake.mean()),
            "density": float(inside.mean() / k), "coverage": float((nearest_fake < r_radius).mean())}


def nearest_distances(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Each row's distance to its nearest row of ``train``."""
    out = np.empty(len(x))
    for rows, d in _chunks(x, train):
        out[rows] = d.min(1)
    return out


def memorisation(d_gen: np.ndarray, d_test: np.ndarray) -> dict:
    """From the nearest-training-image distances of the generated and of the real test images: the median ratio
    and the fraction of generated images closer than the test images' 5th percentile (``None`` without both)."""
    d_gen, d_test = np.asarray(d_gen, np.float64), np.asarray(d_test, np.float64)
    if not len(d_gen) or not len(d_test):
        return {"nn_train_ratio": None, "closer_than_test_p5": None, "n_test": len(d_test)}
    median_test = float(np.median(d_test))
    ratio = float(np.median(d_gen)) / median_test if median_test > 0 else None
    closer = float((d_gen < np.percentile(d_test, 5)).mean())
    return {"nn_train_ratio": ratio, "closer_than_test_p5": closer, "n_test": len(d_test)}


def class_memorisation(fg: np.ndarray, ftest: np.ndarray, ftrain: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """One class: its ``memorisation`` entry and the two distance arrays (kept for the pooled value)."""
    if not len(ftrain):
        empty = np.zeros(0)
        return memorisation(empty, empty), empty, empty
    d_gen, d_test = nearest_distances(fg, ftrain), nearest_distances(ftest, ftrain)
    return memorisation(d_gen, d_test), d_gen, d_test
