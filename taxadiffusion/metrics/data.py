"""Evaluation inputs: real images from the WebDataset shards and generated images from ``manifest.csv``.

Both follow docs/architecture.md (``shard`` and ``generate`` contracts). Images stay encoded (PNG bytes or
file paths) and are decoded per class on demand: at paper scale (6000 generated images of 512 px per class,
Table S2) a decoded set does not fit in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import webdataset as wds
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from taxadiffusion.core.errors import UserError
from taxadiffusion.data.shard_reader import read_index as read_shard_index
from taxadiffusion.data.shard_reader import shard_urls

log = logging.getLogger(__name__)

REAL_SPLITS = {"test": ["test"], "train+test": ["train", "test"]}


@dataclass
class ImageSet:
    """Encoded images with their lineage (one name per level, coarse -> fine)."""

    levels: list[str]
    sources: list = field(default_factory=list)  # PNG bytes (shards) or Path (generated)
    names: list[str] = field(default_factory=list)  # where each image came from, for error messages
    keys: list[str] = field(default_factory=list)  # deterministic sort key within a class
    lineages: list[tuple] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    def add(self, source, name: str, key: str, lineage: tuple, split: str) -> None:
        self.sources.append(source)
        self.names.append(name)
        self.keys.append(key)
        self.lineages.append(lineage)
        self.splits.append(split)

    def groups(self, level_index: int = 0) -> dict[tuple, list[int]]:
        """Indices per taxon at ``levels[level_index]``, the taxon named by its lineage prefix (unambiguous
        even when two genera share a name). Each list is sorted by key: the deterministic pairing order."""
        out: dict[tuple, list[int]] = {}
        for i, lineage in enumerate(self.lineages):
            out.setdefault(tuple(lineage[: level_index + 1]), []).append(i)
        return {k: sorted(v, key=lambda i: self.keys[i]) for k, v in sorted(out.items())}

    def by_class(self) -> dict[str, list[int]]:
        return {k[0]: v for k, v in self.groups(0).items()}

    def by_group(self, level_index: int, names: dict[tuple, str]) -> dict[str, list[int]]:
        """:meth:`groups` keyed by the taxa's row names (:func:`group_names`)."""
        return {names[k]: v for k, v in self.groups(level_index).items()}

    def decode(self, idx: Sequence[int], size: Optional[tuple[int, int]] = None,
               resample: int = Image.LANCZOS) -> np.ndarray:
        """Decode ``idx`` to ``[N, H, W, 3]`` uint8. ``size`` (W, H) resizes with ``resample`` (Lanczos; a
        non-square size stretches); without it every image is brought to the first one's size (a set is expected
        to have one resolution)."""
        arrays = []
        for i in idx:
            src = self.sources[i]
            try:
                img = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src).convert("RGB")
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"{self.names[i]}: cannot decode image ({exc})") from None
            if size is None:
                size = img.size
            if img.size != tuple(size):
                img = img.resize(tuple(size), resample)
            arrays.append(np.asarray(img, dtype=np.uint8))
        if not arrays:
            w, h = size or (1, 1)
            return np.zeros((0, h, w, 3), np.uint8)
        return np.stack(arrays)

    def lazy(self, idx: Sequence[int], size: tuple[int, int], resample: int = Image.LANCZOS) -> LazyImages:
        """``idx`` decoded on access (:class:`LazyImages`), at ``size`` with ``resample`` as :meth:`decode`."""
        return LazyImages(self, list(idx), tuple(size), resample)

    def content_hash(self, idx: Sequence[int]) -> str:
        """Hash of the keys, lineages and encoded bytes of ``idx``: the real-data version in cache keys."""
        h = hashlib.sha256()
        for i in idx:
            src = self.sources[i]
            h.update(self.keys[i].encode() + b"\0" + "/".join(self.lineages[i]).encode() + b"\0")
            h.update(src if isinstance(src, bytes) else Path(src).read_bytes())
        return h.hexdigest()

    def image_size(self) -> tuple[int, int]:
        return tuple(self.decode([0]).shape[2:0:-1]) if len(self) else (0, 0)


def group_names(level_index: int, *sets: ImageSet) -> dict[tuple, str]:
    """The row name of every taxon at ``levels[level_index]`` in ``sets`` (``evaluate.group_level``): its own name,
    or its lineage prefix joined by "/" when another taxon of that level shares the name (homonyms under different
    parents). Decided over all the sets together, so a taxon's generated, real and train images share one name."""
    prefixes = {tuple(lin[: level_index + 1]) for s in sets for lin in s.lineages}
    uses = Counter(p[-1] for p in prefixes)
    return {p: p[-1] if uses[p[-1]] == 1 else "/".join(p) for p in prefixes}


class LazyImages:
    """Images of an :class:`ImageSet` decoded when indexed, so a set too large to hold decoded (a paper-scale class's
    real images at 512 px: tens of GB) is read a batch at a time: ``len()``, and ``[slice]`` or ``[positions]`` give
    the decoded ``[N, H, W, 3]`` uint8 array (:meth:`ImageSet.decode`)."""

    def __init__(self, images: ImageSet, idx: list[int], size: tuple[int, int], resample: int):
        self.images, self.idx, self.size, self.resample = images, idx, size, resample

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, key) -> np.ndarray:
        picked = self.idx[key] if isinstance(key, slice) else [self.idx[int(k)] for k in np.asarray(key).reshape(-1)]
        return self.images.decode(picked, self.size, self.resample)


def read_index(shards_dir: str | Path, levels: list[str]) -> dict:
    """``index.json`` (via ``taxadiffusion.data.shard_reader``), checked against ``params.levels``."""
    index = read_shard_index(shards_dir)
    if list(index.get("levels", levels)) != list(levels):
        path = Path(shards_dir) / "index.json"
        raise UserError(f"{path}: levels {index.get('levels')} differ from params.yaml levels {list(levels)}; "
                        "re-run shard")
    return index


def read_real(shards_dir: str | Path, splits: Sequence[str], levels: list[str]) -> ImageSet:
    """Read the given splits of ``data/shards``; PNG bytes stay encoded (``taxadiffusion.data.shard_reader`` decodes
    them, which would hold a paper-scale split decoded in memory)."""
    index = read_index(shards_dir, levels)
    out = ImageSet(levels=list(levels))
    for split in splits:
        urls = shard_urls(shards_dir, split)
        for url in urls:
            if not Path(url).exists():
                raise UserError(f"{url}: shard listed in {Path(shards_dir) / 'index.json'} not found")
        n = 0
        if urls:
            dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None,
                                     empty_check=False)
            for sample in tqdm(dataset, desc=f"read {split} shards", total=index[split].get("count"), leave=False):
                where = f"{sample.get('__url__', split)}: sample {sample['__key__']}"
                if "png" not in sample or "json" not in sample:
                    raise UserError(f"{where}: missing 'png' or 'json' member")
                try:
                    lineage = json.loads(sample["json"])["lineage"]
                    names = tuple(str(lineage[lv]) for lv in levels)
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise UserError(f"{where}: json has no 'lineage' with level {exc}") from None
                out.add(sample["png"], where, sample["__key__"], names, split)
                n += 1
        count = index[split].get("count")
        if count is not None and n != count:
            raise UserError(f"{Path(shards_dir) / split}: read {n} samples but index.json says {count}")
    return out


def read_generated(generated_dir: str | Path, levels: list[str]) -> tuple[ImageSet, pd.DataFrame]:
    """Read ``manifest.csv`` (docs/architecture.md ``generate``); every row's image must exist."""
    generated_dir = Path(generated_dir)
    manifest = generated_dir / "manifest.csv"
    if not manifest.exists():
        raise UserError(f"{manifest}: not found (run the generate stage first: dvc repro generate)")
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = [c for c in [*levels, "path"] if c not in table.columns]
    if missing:
        raise UserError(f"{manifest}: missing column(s) {missing}")
    out = ImageSet(levels=list(levels))
    for i, row in enumerate(table.itertuples(index=False)):
        line = i + 2  # 1-based, after the header
        rel = getattr(row, "path")
        if not rel:
            raise UserError(f"{manifest}: line {line}: field 'path' is empty")
        path = generated_dir / rel
        if not path.is_file():
            raise UserError(f"{manifest}: line {line}: path '{rel}': file not found")
        lineage = tuple(str(table.iat[i, table.columns.get_loc(lv)]) for lv in levels)
        if not lineage[0]:
            raise UserError(f"{manifest}: line {line}: field '{levels[0]}' is empty")
        out.add(path, f"{manifest}: line {line} ({rel})", rel, lineage, "generated")
    if not len(out):
        raise UserError(f"{manifest}: no images listed")
    return out, table


def read_plan(generated_dir: str | Path) -> Optional[pd.DataFrame]:
    path = Path(generated_dir) / "plan.csv"
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.exists() else None
