"""Reading the WebDataset shards that ``shard`` wrote (docs/architecture.md ``shard``).

:func:`read_index` (``index.json``, checked), :func:`shard_urls`, :func:`iter_shard_samples` (streamed,
decoded) and :func:`load_split_arrays` (a small split in memory, for tests and the tiny preset). Kept apart
from the writer (:mod:`taxadiffusion.data.shard`) so the stages that only read shards do not import (and
depend on) the image preprocessing and the dataset readers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import webdataset as wds

from taxadiffusion.core import files
from taxadiffusion.core.errors import UserError

SPLITS = ("train", "test")  # the splits of data/shards (prepare's `split` column)


def read_index(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / "index.json"
    if not path.is_file():
        raise UserError(f"{path}: not found (run the shard stage first)")
    return files.read_json(path)


def shard_urls(shard_dir: str | Path, split: str) -> list[str]:
    """Absolute shard paths of ``split`` in order (``index.json`` names are relative to ``shard_dir``)."""
    index = read_index(shard_dir)
    if split not in index:
        have = [s for s in SPLITS if s in index]
        raise UserError(f"{Path(shard_dir) / 'index.json'}: no split {split!r} (have {have})")
    return [str(Path(shard_dir) / name) for name in index[split]["shards"]]


def iter_shard_samples(shard_dir: str | Path, split: str, as_array: bool = False) -> Iterator[tuple[str, object, dict]]:
    """Yield ``(key, image, meta)`` in shard order; image is a PIL RGB image, or ``uint8 [H, W, 3]``."""
    urls = shard_urls(shard_dir, split)
    if not urls:
        return
    # nodesplitter=None: every caller (e.g. each DDP rank) sees the whole split; callers shard it themselves.
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
    for sample in ds.decode("rgb8" if as_array else "pil"):
        img = sample["png"]
        if not as_array and img.mode != "RGB":
            img = img.convert("RGB")
        yield sample["__key__"], img, sample["json"]


def load_split_arrays(shard_dir: str | Path, split: str) -> tuple[np.ndarray, list[dict]]:
    """A whole split in memory (small datasets): ``uint8 [N, H, W, 3]`` and the lineage dict of each image."""
    images, lineages = [], []
    for _key, img, meta in iter_shard_samples(shard_dir, split, as_array=True):
        images.append(np.asarray(img, dtype=np.uint8))
        lineages.append(meta["lineage"])
    if not images:
        res = int(read_index(shard_dir).get("resolution", 0))
        return np.zeros((0, res, res, 3), dtype=np.uint8), []
    return np.stack(images), lineages
