"""The training images as latents: encoded once by the ``base`` stage (sd15) or in memory (tiny), read by training.

sd15 with ``model.cache_latents``: :func:`write_latents` streams the train shards through the VAE in batches of
:data:`ENCODE_BATCH` and writes the scaled posterior (mean and std, fp16) of every image into the latent chunks of
:mod:`taxadiffusion.training.latent_chunks`, in O(batch + chunk) memory with a progress bar. Training draws a fresh
posterior sample every step from the step's generator (docs/method.md §1.1), never an unseeded ``.sample()``.
tiny: the lossless space-to-depth view (a deterministic "posterior"), computed in memory at training start;
sd15 without ``model.cache_latents``: the posterior of every image, encoded in memory at training start.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from taxadiffusion.core.errors import UserError
from taxadiffusion.data.shard_reader import iter_shard_samples, read_index
from taxadiffusion.models.base import BaseModel
from taxadiffusion.training.latent_chunks import ChunkWriter, LatentShards, LatentSource, LatentTable, has_chunks

ENCODE_BATCH = 8  # images per VAE call (512 px on a GPU; the batch size never changes what is stored)


@torch.no_grad()
def encode_posterior(base: BaseModel, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 ``[B, H, W, 3]`` -> the scaled posterior ``(mean, std)``, fp32 ``[B, C, h, w]`` on the CPU. ``std`` is
    ``None`` for a deterministic encoder (the tiny base's space-to-depth view)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    dist = base.vae.encode(x.to(base.unet.device, base.vae.dtype)).latent_dist
    scale = base.scaling_factor
    if not hasattr(dist, "std"):
        return (dist.mode() * scale).float().cpu(), None
    return (dist.mean * scale).float().cpu(), (dist.std * scale).float().cpu()


def _batches(shards: str | Path, size: int) -> Iterator[tuple[np.ndarray, list[dict]]]:
    samples = iter_shard_samples(shards, "train", as_array=True)
    while batch := list(islice(samples, size)):
        yield np.stack([np.asarray(img, dtype=np.uint8) for _, img, _ in batch]), [m["lineage"] for _, _, m in batch]


def write_latents(base: BaseModel, shards: str | Path, latents_dir: str | Path, show_progress: bool = True) -> dict:
    """Encode the train split, batch by batch, into latent chunks in ``latents_dir``; returns their index
    (the ``latents.json`` fields). An empty train split is a one-line error."""
    total = int(read_index(shards)["train"]["count"])
    if total == 0:
        raise UserError(f"{shards}: the train split is empty; nothing to encode")
    writer = ChunkWriter(latents_dir)
    with tqdm(total=total, desc="base: encode latents", unit="img", disable=not show_progress) as bar:
        for images, lineages in _batches(shards, ENCODE_BATCH):
            mean, std = encode_posterior(base, images)
            writer.add(mean[:, None], (std if std is not None else torch.zeros_like(mean))[:, None], lineages)
            bar.update(len(lineages))
    return writer.finish()


def latent_source(base: BaseModel, shards: str | Path, latents_dir: str | Path | None) -> LatentSource:
    """What training reads (:class:`~taxadiffusion.training.latent_chunks.LatentSource`): the chunks ``base`` wrote in
    ``latents_dir`` (streamed, memory independent of N) when it holds them, else the train split encoded here,
    in memory (tiny; sd15 without ``model.cache_latents``)."""
    if has_chunks(latents_dir):
        return LatentShards(latents_dir)
    means, stds, lineages = [], [], []
    for images, batch in _batches(shards, 64):
        mean, std = encode_posterior(base, images)
        means.append(mean)
        stds.append(std)
        lineages.extend(batch)
    if not lineages:
        raise UserError(f"{shards}: the train split is empty; nothing to train on")
    # one view each; [:, None] after the cat keeps the encoder's memory layout (tiny: channels-last, which the
    # UNet's float rounding sees: the tiny preset's results stay those of the earlier in-memory code)
    return LatentTable(torch.cat(means)[:, None], None if stds[0] is None else torch.cat(stds)[:, None], lineages)

