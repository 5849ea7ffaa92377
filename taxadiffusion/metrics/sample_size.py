"""What a FID at Table S2's sample sizes can be read against (docs/method.md §5.2): computed per taxon and backbone
from the features ``class_metrics`` holds, so no image is decoded twice.

FID is biased upwards at small sample sizes (the trace terms of two sample covariances; at 19 real vs 250 generated
same-distribution 2048-d features FID / Tr(Σ) is 1.2-1.8), so a class's FID is shown next to:

- **the real-vs-real floor**: FID and KID of real images against *other* real images of the taxon at the sizes of
  the generated comparison. Rule: with ``evaluate.real_split: test`` the reference side is the reference itself (all
  its n_real test images) and the other side a seeded sample, without replacement, of min(n_generated, n_train) of
  the taxon's real *train* images (disjoint from the reference; a "perfect generator" that draws the training
  distribution); with ``train+test`` no real image lies outside the reference, so the floor compares two disjoint
  seeded halves of the reference (⌊n/2⌋ and ⌈n/2⌉: smaller than the comparison's sides, so a higher floor). A FID
  near its floor is as good as that sample size can show.
- **KID ± sd** (``kid``): unbiased in the sample size; sd over ``evaluate.kid_subsets`` subsets.
- **an interval of FID from subsampling**: FID over ``evaluate.fid_subsets`` seeded subsets of
  ``evaluate.fid_subset_fraction`` of each side, drawn without replacement (not a with-replacement bootstrap, which
  biases FID upwards): their sd, min and max. Those FIDs rest on fewer images, so they sit above the full FID;
  the interval shows how much the number moves with the particular images, not where the truth is.
- precision / recall / density / coverage and the memorisation check (``manifold``).

Every draw is seeded by ``evaluate.seed`` and the (backbone, taxon, purpose) it serves, so the outputs do not
depend on the order the classes are evaluated in, and a fresh run gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from taxadiffusion.config import EvaluateConfig
from taxadiffusion.core.lineage import stable_int
from taxadiffusion.metrics.data import REAL_SPLITS
from taxadiffusion.metrics.frechet import frechet_distance
from taxadiffusion.metrics.kid import kid
from taxadiffusion.metrics.manifold import class_memorisation, memorisation, prdc


@dataclass
class Sides:
    """One taxon in one backbone's features: the real reference, the generated images, the taxon's real train
    images, and the positions of the reference's test images (the memorisation check's unseen real images)."""

    real: np.ndarray
    generated: np.ndarray
    train: np.ndarray
    test_rows: list[int]


def draw_seed(cfg: EvaluateConfig, *parts) -> int:
    """The seed of one draw: ``evaluate.seed`` and what the draw serves (a RandomState seed, < 2**32)."""
    return stable_int(cfg.seed, *parts) % 2**32


def floor_rule(cfg: EvaluateConfig) -> str:
    """``train-vs-reference`` when the train split is disjoint from the reference, else ``reference-halves``."""
    return "reference-halves" if "train" in REAL_SPLITS[cfg.real_split] else "train-vs-reference"


def _floor_pair(cfg: EvaluateConfig, sides: Sides, rng: np.random.Generator):
    """The floor's two real samples, (other real images, reference side), or ``None`` below 2 images a side."""
    real = sides.real
    if floor_rule(cfg) == "train-vs-reference":
        n = min(len(sides.generated), len(sides.train))
        if n < 2 or len(real) < 2:
            return None
        return sides.train[np.sort(rng.choice(len(sides.train), n, replace=False))], real
    if len(real) < 4:
        return None
    order = rng.permutation(len(real))
    return real[np.sort(order[: len(real) // 2])], real[np.sort(order[len(real) // 2:])]


def floor(cfg: EvaluateConfig, sides: Sides, key: tuple) -> dict:
    """FID and KID of real against other real images at the comparison's sizes (module docstring: the rule);
    ``floor_sizes`` = [reference side, other side]."""
    pair = _floor_pair(cfg, sides, np.random.default_rng(draw_seed(cfg, *key, "floor")))
    if pair is None:
        return {"fid_floor": None, "kid_floor": None, "floor_sizes": None}
    other, ref = pair
    k = kid(ref, other, cfg.kid_subsets, cfg.kid_subset_size, draw_seed(cfg, *key, "kid_floor"))
    return {"fid_floor": frechet_distance(ref, other), "kid_floor": k and k["kid"],
            "floor_sizes": [len(ref), len(other)]}


def fid_subsets(cfg: EvaluateConfig, fr: np.ndarray, fg: np.ndarray, key: tuple) -> Optional[dict]:
    """FID over ``evaluate.fid_subsets`` subsets of ``evaluate.fid_subset_fraction`` of each side (without
    replacement, seeded): sd, min, max and the subset sizes; ``None`` below 2 images a side."""
    if len(fr) < 2 or len(fg) < 2:
        return None
    rng = np.random.default_rng(draw_seed(cfg, *key, "fid_subsets"))
    na, nb = (max(2, round(cfg.fid_subset_fraction * n)) for n in (len(fr), len(fg)))
    values = [frechet_distance(fr[rng.choice(len(fr), na, replace=False)], fg[rng.choice(len(fg), nb, replace=False)])
              for _ in range(cfg.fid_subsets)]
    return {"sd": float(np.std(values)), "min": float(np.min(values)), "max": float(np.max(values)),
            "sizes": [na, nb]}


def _kid_entry(cfg: EvaluateConfig, fr: np.ndarray, fg: np.ndarray, key: tuple) -> dict:
    k = kid(fr, fg, cfg.kid_subsets, cfg.kid_subset_size, draw_seed(cfg, *key, "kid"))
    return k or {"kid": None, "kid_sd": None, "kid_subset_size": None}


def reading(cfg: EvaluateConfig, sides: Sides, key: tuple) -> dict:
    """Everything but the memorisation check: the floor, KID ± sd, the FID interval, precision / recall /
    density / coverage (``evaluate.prdc_k`` neighbours)."""
    out = floor(cfg, sides, key)
    out.update(_kid_entry(cfg, sides.real, sides.generated, key))
    out["fid_subsets"] = fid_subsets(cfg, sides.real, sides.generated, key)
    out.update(prdc(sides.real, sides.generated, cfg.prdc_k))
    return out


def class_reading(cfg: EvaluateConfig, sides: Sides, key: tuple, nn: dict) -> dict:
    """One class: :func:`reading` plus the memorisation check; its nearest-training-image distances are appended
    to ``nn["gen"]`` / ``nn["test"]`` for the pooled value."""
    out = reading(cfg, sides, key)
    entry, d_gen, d_test = class_memorisation(sides.generated, sides.real[sides.test_rows], sides.train)
    nn.setdefault("gen", []).append(d_gen)
    nn.setdefault("test", []).append(d_test)
    out["memorisation"] = entry
    return out


def pooled_reading(cfg: EvaluateConfig, sides: Sides, key: tuple, nn: dict) -> dict:
    """All classes pooled: :func:`reading` on the pooled features; the memorisation check from every class's
    distances (each image against the training images of its own class)."""
    out = reading(cfg, sides, key)
    out["memorisation"] = memorisation(np.concatenate(nn.get("gen") or [np.zeros(0)]),
                                       np.concatenate(nn.get("test") or [np.zeros(0)]))
    return out


def level_reading(cfg: EvaluateConfig, sides: Sides, key: tuple) -> dict:
    """One taxon of the per-level table: KID and the FID floor only."""
    return {"kid": _kid_entry(cfg, sides.real, sides.generated, key)["kid"],
            "fid_floor": floor(cfg, sides, key)["fid_floor"]}


def settings(cfg: EvaluateConfig) -> dict:
    """``summary.json`` ``data.sample_size``: how the numbers above were drawn."""
    return {"seed": cfg.seed, "floor_rule": floor_rule(cfg), "kid_subsets": cfg.kid_subsets,
            "kid_subset_size": cfg.kid_subset_size, "kid_kernel": "(x·y/d + 1)^3, unbiased MMD² (torch-fidelity)",
            "fid_subsets": cfg.fid_subsets, "fid_subset_fraction": cfg.fid_subset_fraction, "prdc_k": cfg.prdc_k}
