"""Latent chunks: the VAE posterior of every training image, written once by ``base``, streamed by training.

``<latents_dir>/`` (sd15 with ``model.cache_latents``), docs/architecture.md:

- ``train-000000.safetensors``, ...: ``mean`` and ``std`` (fp16 ``[n, K, C, h, w]``: the *scaled* posterior
  ``N(mean, std^2)`` of each of ``K`` views of an image; K = 1: the plain view) and ``taxon`` (int32 ``[n]``: the
  image's row of the index's ``taxa`` table), :data:`CHUNK_SIZE` images per chunk (the last one fewer), in shard
  order. Plain tensors in safetensors files: nothing is unpickled.
- ``latents.json`` (written last; also the tiny preset's only file): ``{"preset", "cached": N, "format",
  "shape": [C, h, w], "views": K, "chunk_size", "chunks": [{"file", "count"}], "taxa": [lineage, ...]}``.

Training reads through a :class:`LatentSource`: ``len(source)``, ``source.lineages[i]`` and ``source.rows(idx)``,
the stored posterior rows of those images. Each sample then draws a fresh posterior sample ``mean + std * eps`` (and,
with K > 1, a view) from its own generator (:mod:`taxadiffusion.training.batches`), as the official code samples
``latent_dist.sample()`` every step (docs/method.md §1.1): a pure function of (seed, step, position), so a resumed
run, or one under another number of processes, draws what an uninterrupted one would have.
:class:`LatentShards` maps a global index to (chunk, offset) and reads only the rows a batch needs from a
few open chunks (safetensors slices, least recently used closed first): memory does not grow with N.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json, write_json

INDEX_FILE = "latents.json"
CHUNK_PATTERN = "train-%06d.safetensors"
CHUNK_SIZE = 512  # images per chunk: 32 MiB of fp16 mean + std per view at 512 px (64 x 64 x 4 latents)
FORMAT = 1
OPEN_CHUNKS = 8  # chunk files kept open by a reader (a batch's rows touch at most batch-size chunks)
_REBUILD = "re-run `dvc repro -f base`"


class LatentSource:
    """What training reads: ``len``, ``lineages[i]`` and ``batch(idx, gen)`` (module docstring)."""

    lineages: Sequence[dict]

    def __len__(self) -> int:
        return len(self.lineages)

    def rows(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mean, std)`` rows ``[B, K, C, h, w]`` of images ``idx`` (``std`` None: a deterministic encoder)."""
        raise NotImplementedError


class LatentTable(LatentSource):
    """Latents in memory (the tiny preset's lossless view, or sd15 encoded at training start): ``mean``
    ``[N, K, C, h, w]``, ``std`` the same shape or ``None`` (a deterministic encoder)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None, lineages: list[dict]):
        if mean.ndim != 5 or len(mean) != len(lineages) or (std is not None and std.shape != mean.shape):
            raise ValueError(f"latents {tuple(mean.shape)} for {len(lineages)} lineages")
        self.mean, self.std, self.lineages = mean, std, lineages

    def rows(self, idx: np.ndarray):
        index = torch.from_numpy(idx).long()
        return self.mean[index], None if self.std is None else self.std[index]


# --------------------------------------------------------------------------------------------------
# Writing (the `base` stage)


class ChunkWriter:
    """Append ``(mean, std, lineages)`` batches in order; full chunks go to disk at once (memory: one chunk).
    :meth:`finish` writes the rest and returns the index for ``latents.json``."""

    def __init__(self, folder: str | Path, chunk_size: int = CHUNK_SIZE):
        self.folder, self.chunk_size = Path(folder), chunk_size
        self.chunks: list[dict] = []
        self.taxa: dict[str, int] = {}
        self._mean: list[torch.Tensor] = []
        self._std: list[torch.Tensor] = []
        self._taxon: list[int] = []
        self.shape: list[int] | None = None

    def add(self, mean: torch.Tensor, std: torch.Tensor, lineages: list[dict]) -> None:
        if self.shape is None:
            self.shape = list(mean.shape[1:])
        for i, lineage in enumerate(lineages):
            self._mean.append(mean[i].half())
            self._std.append(std[i].half())
            self._taxon.append(self.taxa.setdefault(json.dumps(lineage, sort_keys=True), len(self.taxa)))
            if len(self._taxon) == self.chunk_size:
                self._flush()

    def _flush(self) -> None:
        if not self._taxon:
            return
        self.chunks.append(save_chunk(self.folder, len(self.chunks), torch.stack(self._mean),
                                      torch.stack(self._std), torch.tensor(self._taxon, dtype=torch.int32)))
        self._mean, self._std, self._taxon = [], [], []

    def finish(self) -> dict:
        self._flush()
        return chunk_index(self.shape or [1, 0, 0, 0], self.chunk_size, self.chunks,
                           [json.loads(key) for key in self.taxa])


def save_chunk(folder: str | Path, number: int, mean: torch.Tensor, std: torch.Tensor, taxon: torch.Tensor) -> dict:
    """Write chunk ``number`` (``mean``/``std`` ``[n, K, C, h, w]`` stored fp16, ``taxon`` int32 ``[n]``); returns
    its entry of the index. Chunks are independent files, so processes can write different chunks of one folder."""
    name = CHUNK_PATTERN % number
    tensors = {"mean": mean.half().contiguous(), "std": std.half().contiguous(), "taxon": taxon.to(torch.int32)}
    save_file(tensors, str(Path(folder) / name), metadata={"format": str(FORMAT)})
    return {"file": name, "count": len(taxon)}


def chunk_index(row_shape: Sequence[int], chunk_size: int, chunks: list[dict], taxa: list[dict]) -> dict:
    """The ``latents.json`` fields of ``chunks`` (rows of ``row_shape`` = ``[K, C, h, w]``), in the file's key order."""
    views, *shape = row_shape
    return {"format": FORMAT, "cached": sum(c["count"] for c in chunks), "shape": list(shape), "views": views,
            "chunk_size": chunk_size, "chunks": chunks, "taxa": taxa}


def write_index(folder: str | Path, preset: str, index: dict | None = None) -> None:
    """``latents.json``: always written (tiny: ``{"preset", "cached": 0}``), so the DAG is the same for both presets."""
    write_json(Path(folder) / INDEX_FILE, {"preset": preset, "cached": 0, **(index or {})})


# --------------------------------------------------------------------------------------------------
# Reading (training)


def has_chunks(folder: str | Path | None) -> bool:
    """Whether ``folder`` holds latent chunks (sd15 with ``model.cache_latents``)."""
    path = Path(folder) / INDEX_FILE if folder is not None else None
    return path is not None and path.is_file() and int(read_json(path).get("cached", 0)) > 0


class _Lineages(Sequence):
    def __init__(self, taxa: list[dict], codes: np.ndarray):
        self.taxa, self.codes = taxa, codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        return self.taxa[self.codes[i]]


class LatentShards(LatentSource):
    """The chunks of ``folder`` (module docstring). Resident: the lineage table, 4 bytes per image (its taxon
    code) and the pages of the few open chunks that batches touched."""

    def __init__(self, folder: str | Path, open_chunks: int = OPEN_CHUNKS):
        self.folder = Path(folder)
        self.index = _check_index(self.folder / INDEX_FILE, read_json(self.folder / INDEX_FILE))
        self.chunk_size = int(self.index["chunk_size"])
        self._open: OrderedDict[int, object] = OrderedDict()
        self._max_open = open_chunks
        codes = [self._file(c).get_tensor("taxon").numpy() for c in range(len(self.index["chunks"]))]
        self.lineages = _Lineages(self.index["taxa"], np.concatenate(codes))
        if len(self.lineages) != self.index["cached"] or self.lineages.codes.max() >= len(self.index["taxa"]):
            raise UserError(f"{self.folder / INDEX_FILE}: its chunks hold {len(self.lineages)} images or taxa "
                            f"it does not list; {_REBUILD}")

    def _file(self, chunk: int):
        f = self._open.pop(chunk, None)
        if f is None:
            f = self._check_chunk(chunk)
            if len(self._open) >= self._max_open:
                _, oldest = self._open.popitem(last=False)
                oldest.__exit__(None, None, None)
        self._open[chunk] = f  # most recently used last
        return f

    def _check_chunk(self, chunk: int):
        """Open chunk ``chunk``; missing, truncated or of other shapes than the index says: a one-line error."""
        entry = self.index["chunks"][chunk]
        path = self.folder / entry["file"]
        try:
            f = safe_open(str(path), framework="pt")
        except Exception as exc:  # missing, truncated or not safetensors
            raise UserError(f"{path}: cannot read the latent chunk ({str(exc).splitlines()[0][:120]}); "
                            f"{_REBUILD}") from None
        row = [self.index["views"], *self.index["shape"]]
        for name, want in (("mean", [entry["count"], *row]), ("std", [entry["count"], *row]),
                           ("taxon", [entry["count"]])):
            if name not in f.keys() or list(f.get_slice(name).get_shape()) != want:
                f.__exit__(None, None, None)
                raise UserError(f"{path}: no {name} tensor of shape {want}; {_REBUILD}")
        return f

    def rows(self, idx: np.ndarray):
        chunk, offset = np.divmod(idx.astype(np.int64), self.chunk_size)
        mean, std = [], []
        for c, o in zip(chunk.tolist(), offset.tolist()):
            f = self._file(c)
            mean.append(f.get_slice("mean")[o : o + 1])
            std.append(f.get_slice("std")[o : o + 1])
        return torch.cat(mean), torch.cat(std)


def _check_index(path: Path, index) -> dict:
    keys = ("format", "cached", "shape", "views", "chunk_size", "chunks", "taxa")
    if not isinstance(index, dict) or any(k not in index for k in keys) or index["format"] != FORMAT:
        raise UserError(f"{path}: not a latent index of format {FORMAT} (keys {', '.join(keys)}); {_REBUILD}")
    counts = [c.get("count") for c in index["chunks"]]
    full = all(n == index["chunk_size"] for n in counts[:-1]) and 0 < (counts or [0])[-1] <= index["chunk_size"]
    if not full or sum(counts) != index["cached"]:
        raise UserError(f"{path}: chunk counts {counts[:4]}... do not add up to {index['cached']} images in chunks "
                        f"of {index['chunk_size']}; {_REBUILD}")
    return index
