"""Reading the WebDataset shards that ``shard`` wrote (docs/architecture.md ``shard``).

:func:`read_index` (``index.json``, checked), :func:`shard_urls`, :func:`iter_shard_samples` (streamed,
decoded), :class:`ShardImages` (random access to a split's images, for a DataLoader's worker processes) and
:func:`load_split_arrays` (a small split in memory, for tests and the tiny preset). Kept apart
from the writer (:mod:`taxadiffusion.data.shard`) so the stages that only read shards do not import (and
depend on) the image preprocessing and the dataset readers.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
import webdataset as wds
from PIL import Image

from taxadiffusion.core import files
from taxadiffusion.core.errors import UserError

SPLITS = ("train", "test")  # the splits of data/shards (prepare's `split` column)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's share, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


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


class ShardImages:
    """The images of one split by position (``images[i]``: the i-th sample in shard order, ``uint8 [H, W, 3]``,
    decoded as :func:`iter_shard_samples` decodes it), for a map-style ``torch.utils.data.DataLoader``: its worker
    processes decode in parallel and it still yields batches in order. The tar headers are read once (members'
    offsets and sizes; the ``json`` members for the lineages, kept as ``taxa`` in order of first appearance and a
    4-byte ``codes[i]`` per image); each image is then one positioned read and a PNG decode."""

    def __init__(self, shard_dir: str | Path, split: str):
        self.urls = shard_urls(shard_dir, split)
        where: list[tuple[int, int, int]] = []
        taxa: dict[str, int] = {}
        codes: list[int] = []
        for n, url in enumerate(self.urls):
            for key, png, meta in _tar_members(url):
                where.append((n, *png))
                codes.append(taxa.setdefault(json.dumps(meta["lineage"], sort_keys=True), len(taxa)))
        self.where = np.asarray(where, dtype=np.int64).reshape(-1, 3)  # (shard, offset, size) per image
        self.codes = np.asarray(codes, dtype=np.int32)
        self.taxa = [json.loads(k) for k in taxa]

    def __len__(self) -> int:
        return len(self.where)

    def lineage(self, i: int) -> dict:
        return self.taxa[self.codes[i]]

    def __getitem__(self, i: int) -> np.ndarray:
        shard, offset, size = (int(v) for v in self.where[i])
        with open(self.urls[shard], "rb") as f:  # opened per read: nothing to share across forked workers
            data = os.pread(f.fileno(), size, offset)
        with Image.open(io.BytesIO(data)) as img:  # webdataset's "rgb8": load, convert("RGB"), asarray
            img.load()
            return np.asarray(img.convert("RGB"))


def _tar_members(url: str) -> Iterator[tuple[str, tuple[int, int], dict]]:
    """``(key, (offset, size) of the png member, parsed json member)`` per sample of one shard, in tar order
    (webdataset's grouping: the key is the member name up to the first dot of its base name)."""
    sample: dict = {}
    with tarfile.open(url) as tar:
        for member in tar:
            if not member.isfile():
                continue
            head, _, base = member.name.rpartition("/")
            stem, _, ext = base.partition(".")
            key = f"{head}/{stem}" if head else stem
            if sample and sample["key"] != key:
                yield _complete(url, sample)
                sample = {}
            sample["key"] = key
            if ext == "png":
                sample["png"] = (member.offset_data, member.size)
            elif ext == "json":
                sample["json"] = json.loads(tar.extractfile(member).read())
    if sample:
        yield _complete(url, sample)


def _complete(url: str, sample: dict) -> tuple[str, tuple[int, int], dict]:
    if "png" not in sample or "json" not in sample:
        raise UserError(f"{url}: sample {sample['key']!r} lacks its png or json member (rerun the shard stage)")
    return sample["key"], sample["png"], sample["json"]


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
