"""Which generated image is compared with which real one (LPIPS, the probe's 1-cos), and which pairs measure the
diversity of a class's images (docs/method.md §5 "Pairs").

Pairs are made per *drawn taxon*: the lineage a generated image was drawn for, cut at ``generate.target_level``
(the species by default; :func:`taxadiffusion.metrics.rarity.drawn_taxon`). Its real images are the reference
images whose lineage starts with it. Positions index the class's image lists (sorted by key).

- ``heldout`` (``evaluate.protocol``, the default): **every** generated image is paired with one real image of its
  own drawn taxon. The real images of a taxon are dealt out in a seeded random order, reshuffled each time they
  run out, so with 50 generated and 3 real images each real image serves 16 or 17 times. A taxon without a real
  image leaves its generated images unpaired; they are counted (``species_without_real``), never silently paired
  across species.
- ``authors``: the co-author's ``lpips.py`` ([EVAL]): within each sample folder (one per drawn taxon in the
  official generation loop), real image i with generated image i, ``min(n_real, n_generated)`` pairs, here in
  sorted order.
- Diversity (either protocol): every pair of two generated images of the same drawn taxon, and the same for its
  real images; where a class has more than ``evaluate.diversity_pairs`` such pairs on a side, a seeded sample of
  that many (without replacement), the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from taxadiffusion.core.lineage import lineage_key, stable_int
from taxadiffusion.metrics.rarity import drawn_taxon

HELDOUT, AUTHORS = "heldout", "authors"
RULES = {
    HELDOUT: "every generated image with a real reference image of its own drawn taxon (the species), real images "
             "dealt out in a seeded order; a taxon without a real image is left unpaired and counted",
    AUTHORS: "within each drawn taxon (the official sample folder), real_i vs generated_i in sorted order, "
             "min(n_real, n_gen) pairs ([EVAL] lpips.py)",
}
DIVERSITY = ("mean over pairs of two images of the same drawn taxon (generated with generated, real with real); "
             "a seeded sample of evaluate.diversity_pairs pairs per class and side when there are more")


@dataclass(frozen=True)
class Pairs:
    """Generated-vs-real pairs of one class (positions in its generated and real image lists), and the drawn
    taxa left without a real image (lineage key -> number of generated images)."""

    gen: np.ndarray
    real: np.ndarray
    unpaired: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gen)


def taxon_groups(lineages: list[tuple]) -> dict[tuple, list[int]]:
    """Positions per drawn taxon, in list order (the lists are sorted by key)."""
    out: dict[tuple, list[int]] = {}
    for pos, lineage in enumerate(lineages):
        out.setdefault(drawn_taxon(tuple(lineage)), []).append(pos)
    return out


def real_groups(taxa, real_lineages: list[tuple]) -> dict[tuple, list[int]]:
    """For each drawn taxon, the positions of the real images whose lineage starts with it."""
    out: dict[tuple, list[int]] = {t: [] for t in taxa}
    for pos, lineage in enumerate(real_lineages):
        for depth in {len(t) for t in taxa}:
            prefix = tuple(lineage[:depth])
            if prefix in out:
                out[prefix].append(pos)
    return out


def make_pairs(gen_lineages: list[tuple], real_lineages: list[tuple], protocol: str) -> Pairs:
    """The class's generated-vs-real pairs under ``protocol`` (module docstring)."""
    groups = taxon_groups(gen_lineages)
    reals = real_groups(groups, real_lineages)
    gen, real, unpaired = [], [], {}
    for taxon, gpos in groups.items():
        rpos = reals[taxon]
        if not rpos:
            unpaired[lineage_key(taxon)] = len(gpos)
            continue
        if protocol == AUTHORS:
            n = min(len(gpos), len(rpos))
            gen += gpos[:n]
            real += rpos[:n]
            continue
        rng = np.random.default_rng(stable_int("pairing", lineage_key(taxon)))
        rounds = -(-len(gpos) // len(rpos))
        order = np.concatenate([rng.permutation(len(rpos)) for _ in range(rounds)])[: len(gpos)]
        gen += gpos
        real += [rpos[k] for k in order]
    return Pairs(np.asarray(gen, np.int64), np.asarray(real, np.int64), unpaired)


def diversity_pairs(groups: dict, cap: int, salt: str) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j) of positions within each group; a seeded sample of ``cap`` of them when there are more
    (``salt`` names the class and side, so each draws its own sample)."""
    a, b = [], []
    for pos in groups.values():
        i, j = np.triu_indices(len(pos), k=1)
        a.append(np.asarray(pos, np.int64)[i])
        b.append(np.asarray(pos, np.int64)[j])
    a = np.concatenate(a) if a else np.zeros(0, np.int64)
    b = np.concatenate(b) if b else np.zeros(0, np.int64)
    if len(a) > cap:
        keep = np.sort(np.random.default_rng(stable_int("diversity", salt)).choice(len(a), cap, replace=False))
        a, b = a[keep], b[keep]
    return a, b


def cosine_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cos of two ``[N, D]`` feature arrays."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    y = y / np.linalg.norm(y, axis=1, keepdims=True).clip(1e-12)
    return 1.0 - (x * y).sum(1)


def batch_mean(values: np.ndarray, batch_size: int) -> Optional[float]:
    """The mean of per-batch means over consecutive batches (the [EVAL] script's average: its last, smaller
    batch weighs as much as a full one)."""
    values = np.asarray(values, np.float64)
    if not len(values):
        return None
    return float(np.mean([values[s : s + batch_size].mean() for s in range(0, len(values), batch_size)]))
