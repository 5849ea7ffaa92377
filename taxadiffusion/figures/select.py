"""Which taxa the figures show (documented rules, docs/figures.md), and their real training images.

Every rule is a function of the prepared table alone (no randomness), so the same data always gives the
same rows. A *taxon* of level ``k`` is a lineage prefix ``levels[: k + 1]``; taxa are keyed by
``plan.lineage_key`` and carried as lineage dicts whose finer levels are ``plan.NONE`` (as in the plan).
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import webdataset as wds
from PIL import Image

from taxadiffusion.core.lineage import NONE
from taxadiffusion.data.shard_reader import shard_urls
from taxadiffusion.sampling.plan import read_table as plan_read_table


def read_table(prepared_dir: str | Path, levels: list[str]) -> pd.DataFrame:
    """``<prepared>/table.parquet``: the level columns and ``split`` as text, checked (``plan.read_table``)."""
    return plan_read_table(prepared_dir, levels)[[*levels, "split"]].astype(str)


def taxon(names, levels: list[str]) -> dict:
    """A lineage dict from the names of the first levels; finer levels ``NONE`` (as the plan writes them)."""
    names = list(names)
    return {lv: (names[i] if i < len(names) else NONE) for i, lv in enumerate(levels)}


def train_counts(table: pd.DataFrame, levels: list[str], k: int) -> dict[tuple, int]:
    """Training images per taxon of level ``k`` (lineage tuple -> count)."""
    train = table[table["split"] == "train"]
    return {tuple(key): int(n) for key, n in train.groupby(levels[: k + 1], sort=True).size().items()}


def test_taxa(table: pd.DataFrame, levels: list[str], k: int) -> list[tuple]:
    test = table[table["split"] == "test"]
    return sorted({tuple(r) for r in test[levels[: k + 1]].itertuples(index=False)})


def round_robin(table: pd.DataFrame, levels: list[str], k: int, n: int) -> list[tuple]:
    """Fig. S5 rule: test taxa of level ``k``; within each class, most training images first (then by name);
    classes in name order take turns (each class's first, then each class's second, ...) until ``n``."""
    counts = train_counts(table, levels, k)
    by_class: dict[str, list[tuple]] = defaultdict(list)
    for lin in test_taxa(table, levels, k):
        by_class[lin[0]].append(lin)
    queues = [sorted(v, key=lambda lin: (-counts.get(lin, 0), lin)) for _, v in sorted(by_class.items())]
    picked: list[tuple] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues):
        picked += [q[depth] for q in queues if depth < len(q)][: n - len(picked)]
        depth += 1
    return picked


def sibling_taxa(table: pd.DataFrame, levels: list[str], k: int, n: int) -> tuple[tuple, list[tuple]] | None:
    """Fig. S6 rule: among the groups of level ``k - 1`` (genera, for species) with at least ``n`` test taxa
    of level ``k``, the one with most training images (ties: by name); its ``n`` test taxa with most
    training images (ties: by name). None when no group qualifies (or ``k == 0``)."""
    if k < 1:
        return None
    counts = train_counts(table, levels, k)
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for lin in test_taxa(table, levels, k):
        groups[lin[:-1]].append(lin)
    ok = [(g, members) for g, members in groups.items() if len(members) >= n]
    if not ok:
        return None
    size = {g: sum(counts.get(m, 0) for m in members) for g, members in ok}
    group, members = min(ok, key=lambda gm: (-size[gm[0]], gm[0]))
    return group, sorted(members, key=lambda lin: (-counts.get(lin, 0), lin))[:n]


def real_images(shards_dir: str | Path, levels: list[str], k: int, wanted: list[tuple], per_taxon: int,
                split: str = "train") -> dict[tuple, list[np.ndarray]]:
    """Up to ``per_taxon`` real images (uint8 ``[H, W, 3]``, shard order) of each ``wanted`` taxon of level
    ``k``; only the PNGs of wanted taxa are decoded, and reading stops once every taxon has its images."""
    need = {tuple(w): per_taxon for w in wanted}
    out: dict[tuple, list[np.ndarray]] = {tuple(w): [] for w in wanted}
    if per_taxon < 1 or not wanted:
        return out
    ds = wds.WebDataset(shard_urls(shards_dir, split), shardshuffle=False, nodesplitter=None,
                        workersplitter=None, empty_check=False)
    for sample in ds:
        lineage = json.loads(sample["json"])["lineage"]
        key = tuple(str(lineage[lv]) for lv in levels[: k + 1])
        if need.get(key, 0) > 0:
            out[key].append(np.asarray(Image.open(io.BytesIO(sample["png"])).convert("RGB"), dtype=np.uint8))
            need[key] -= 1
            if not any(need.values()):
                break
    return out
