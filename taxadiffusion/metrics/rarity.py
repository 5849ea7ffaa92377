"""Probe accuracy of generated images by rarity: split by how many training images their species has.

Each generated image is drawn for one taxon (the species at the default ``generate.target_level``; a coarser
target level draws genera, families, ...). Its rarity is the number of images of that taxon in the *train* split
of the shards (the images the diffusion model learned it from), put in one of :data:`RARITY_BUCKETS`:
1-2, 3-5, 6-20 and more than 20 training images. A taxon with no training image at all (only possible when the
generated set names taxa the shards do not train on) goes to the extra bucket ``"0"``, present only then.
Per bucket: the number of taxa and images, and the probe's top-1 accuracy per level
(:func:`taxadiffusion.metrics.probe.level_accuracy`: labels the probe never saw are not scored).

``summary.json``: ``overall.probe.acc_by_rarity = {bucket: {"train_images": [lo, hi or null], "n_species",
"n_images", "acc": {level: acc}}}``, buckets in the order below (``n_species`` counts the drawn taxa).
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from taxadiffusion.core.errors import UserError
from taxadiffusion.core.lineage import NONE
from taxadiffusion.data.shard_reader import shard_urls
from taxadiffusion.metrics.data import read_index
from taxadiffusion.metrics.probe import level_accuracy

# (name, fewest, most training images; None: no upper bound). A constant, not a param: tables stay comparable.
RARITY_BUCKETS: tuple[tuple[str, int, Optional[int]], ...] = (("1-2", 1, 2), ("3-5", 3, 5), ("6-20", 6, 20),
                                                               (">20", 21, None))
NOT_IN_TRAIN = "0"


def bucket_of(n_train: int) -> str:
    for name, lo, hi in RARITY_BUCKETS:
        if n_train >= lo and (hi is None or n_train <= hi):
            return name
    return NOT_IN_TRAIN


def train_counts(shards_dir: str | Path, levels: list[str]) -> Counter:
    """Training images per taxon, every lineage prefix counted (``(class,)``, ``(class, order)``, ...), from the
    ``json`` members of the train shards (the PNG members are skipped, not read)."""
    index = read_index(shards_dir, levels)
    counts: Counter = Counter()
    n = 0
    for url in shard_urls(shards_dir, "train"):
        try:
            with tarfile.open(url) as tar:
                for member in tar:
                    if not member.name.endswith(".json"):
                        continue
                    lineage = json.loads(tar.extractfile(member).read())["lineage"]
                    names = tuple(str(lineage[lv]) for lv in levels)
                    counts.update(names[:k] for k in range(1, len(names) + 1))
                    n += 1
        except (OSError, tarfile.TarError) as exc:
            raise UserError(f"{url}: cannot read train shard ({exc})") from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{url}: member {member.name}: json has no 'lineage' with level {exc}") from None
    expected = index["train"].get("count")
    if expected is not None and n != expected:
        raise UserError(f"{Path(shards_dir) / 'train'}: read {n} samples but index.json says {expected}")
    return counts


def drawn_taxon(lineage: tuple) -> tuple:
    """The lineage cut after its last named level (levels below the target level are ``"None"`` or empty)."""
    named = [k for k, name in enumerate(lineage) if name not in (NONE, "")]
    return tuple(lineage[: named[-1] + 1]) if named else ()


def acc_by_rarity(pred: np.ndarray, labels: np.ndarray, lineages: list[tuple], counts: Counter,
                  levels: list[str]) -> dict:
    """The ``acc_by_rarity`` entry (module docstring) of generated images with probe predictions ``pred`` and
    labels ``labels`` (``[N, levels]``, -1 = a taxon the probe never saw) drawn for ``lineages``."""
    out = {}
    for name, entry, idx in _buckets(lineages, counts):
        acc = level_accuracy(pred[idx], labels[idx], levels)
        out[name] = {**entry, "acc": {lv: v["acc"] for lv, v in acc.items()}}
    return out


def rates_by_rarity(hits: dict[str, np.ndarray], lineages: list[tuple], counts: Counter, levels: list[str]) -> dict:
    """The same buckets for hit arrays (``{name: [N, levels]}``, 1 hit, 0 miss, -1 not scored; e.g. BioCLIP's
    zero-shot top-1 and top-5): per bucket the taxa, the images and each array's :func:`hit_rates`."""
    return {name: {**entry, **{key: hit_rates(h[idx], levels) for key, h in hits.items()}}
            for name, entry, idx in _buckets(lineages, counts)}


def hit_rates(hits: np.ndarray, levels: list[str]) -> dict:
    """Per level: the fraction of scored entries (>= 0) that are hits; None when none is scored."""
    hits = np.asarray(hits).reshape(-1, len(levels))
    return {lv: float(hits[hits[:, k] >= 0, k].mean()) if (hits[:, k] >= 0).any() else None
            for k, lv in enumerate(levels)}


def _buckets(lineages: list[tuple], counts: Counter):
    """``(bucket, {"train_images", "n_species", "n_images"}, image indices)`` per bucket in order; bucket 0 only
    when it has images."""
    taxa = [drawn_taxon(tuple(lin)) for lin in lineages]
    buckets = np.array([bucket_of(counts.get(t, 0)) for t in taxa], dtype=object)
    for name, lo, hi in (*RARITY_BUCKETS, (NOT_IN_TRAIN, 0, 0)):
        idx = np.flatnonzero(buckets == name)
        if name == NOT_IN_TRAIN and not len(idx):
            continue
        yield name, {"train_images": [lo, hi], "n_species": len({taxa[i] for i in idx}), "n_images": int(len(idx))}, idx
