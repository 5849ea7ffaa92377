"""The training images as latents: encoded once by the ``base`` stage (sd15) or in memory (tiny), read by training.

sd15 with ``model.cache_latents``: :func:`write_latents` streams the train shards through the VAE in batches of
:func:`encode_batch` images (8 on the CPU, 64 on a GPU) and writes the scaled posterior (mean and std, fp16) of every
image into the latent chunks of :mod:`taxadiffusion.training.latent_chunks`, in O(batch + chunk) memory with a
progress bar. The PNGs are decoded in DataLoader worker processes (on a GPU one per available core), on a GPU the VAE
encodes in bf16 (:func:`encode_dtype`, docs/deviations.md). Under several processes (``torchrun`` /
``accelerate launch``) rank r encodes every world_size-th chunk and rank 0 writes the index after a barrier:
batches never straddle chunks, so the chunks are those of one process. Training draws a fresh
posterior sample every step from the step's generator (docs/method.md §1.1), never an unseeded ``.sample()``.
tiny: the lossless space-to-depth view (a deterministic "posterior"), computed in memory at training start;
sd15 without ``model.cache_latents``: the posterior of every image, encoded in memory at training start.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from taxadiffusion.core.errors import UserError
from taxadiffusion.data.shard_reader import ShardImages, available_cores, iter_shard_samples
from taxadiffusion.models.base import BaseModel, move
from taxadiffusion.training.latent_chunks import (
    CHUNK_PATTERN,
    CHUNK_SIZE,
    LatentShards,
    LatentSource,
    LatentTable,
    chunk_index,
    has_chunks,
    save_chunk,
)

# Images per VAE call. The process count never changes the batches (write_latents); the device type does, as it
# changes the kernels anyway. CUDA: the encoder's first blocks hold 128-channel 512x512 tensors (64 MiB each per
# image in bf16, a few alive at once): ~0.3 GiB per image, ~20 GiB for 64, inside a 40-80 GiB card.
ENCODE_BATCH = {"cpu": 8, "cuda": 64}


def encode_batch(device: torch.device) -> int:
    """Images per VAE call on ``device`` (:data:`ENCODE_BATCH`)."""
    return ENCODE_BATCH.get(device.type) or ENCODE_BATCH["cuda"]  # another accelerator: a GPU's batch


def encode_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that has it (diffusers' examples encode in the weight dtype; the stored posterior is fp16
    either way: docs/deviations.md), fp32 elsewhere (CPU bf16 convolutions are slower and lossy)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@torch.no_grad()
def encode_posterior(base: BaseModel, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 ``[B, H, W, 3]`` -> the scaled posterior ``(mean, std)``, fp32 ``[B, C, h, w]`` on the CPU. ``std`` is
    ``None`` for a deterministic encoder (the tiny base's space-to-depth view). ``images`` is scaled to [-1, 1] where
    it is: write_latents hands over uint8 already on the device (a quarter of the bytes to copy)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    dist = base.vae.encode(x.to(base.unet.device, base.vae.dtype)).latent_dist
    scale = base.scaling_factor
    if not hasattr(dist, "std"):
        return (dist.mode() * scale).float().cpu(), None
    return (dist.mean * scale).float().cpu(), (dist.std * scale).float().cpu()


def _batches(shards: str | Path, size: int) -> Iterator[tuple[np.ndarray, list[dict]]]:
    samples = iter_shard_samples(shards, "train", as_array=True)
    while batch := list(islice(samples, size)):
        yield np.stack([np.asarray(img, dtype=np.uint8) for _, img, _ in batch]), [m["lineage"] for _, _, m in batch]


def _loader(images: ShardImages, batches: list[list[int]], device: torch.device, ranks_here: int) -> DataLoader:
    """The batches' images, decoded in worker processes, in order. GPU: one per core (the cores shared by this
    machine's ranks), to keep up with a 64-image bf16 batch. CPU: one, overlapping the encode, which has the other
    cores (a 512 px PNG decodes in ~5 ms, the SD1.5 VAE encodes it in ~1 s there; more processes would take cores
    from the encode's threads)."""
    workers = max(1, available_cores() // max(1, ranks_here)) if device.type == "cuda" else 1
    workers = min(len(batches), workers)
    return DataLoader(images, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda")


def write_latents(base: BaseModel, shards: str | Path, latents_dir: str | Path, show_progress: bool = True,
                  state=None) -> dict:
    """Encode the train split into latent chunks in ``latents_dir``; returns their index (the ``latents.json``
    fields). ``state`` (accelerate ``PartialState``; None: one process): rank r writes every world_size-th chunk,
    all ranks return after a barrier. An empty train split is a one-line error."""
    images = ShardImages(shards, "train")
    if len(images) == 0:
        raise UserError(f"{shards}: the train split is empty; nothing to encode")
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = base.unet.device
    move(base.vae, device, encode_dtype(device))
    size = encode_batch(device)
    # each chunk is cut into batches from its own start, so which process encodes it never changes the batches
    starts = list(range(0, len(images), CHUNK_SIZE))
    mine = starts[rank::world]
    batches = [list(range(b, min(b + size, s + CHUNK_SIZE, len(images))))
               for s in mine for b in range(s, min(s + CHUNK_SIZE, len(images)), size)]
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    row_shape = None
    with tqdm(total=sum(map(len, batches)), desc="base: encode latents", unit="img", disable=not show_progress) as bar:
        means, stds, first = [], [], None
        for batch, pixels in zip(batches, _loader(images, batches, device, ranks_here)):
            first = batch[0] if first is None else first
            # non_blocking: the copy from the DataLoader's pinned memory overlaps the next batch's decode
            mean, std = encode_posterior(base, pixels.to(device, non_blocking=True))
            row_shape = row_shape or [1, *mean.shape[1:]]  # K = 1 view
            means.append(mean[:, None])
            stds.append((std if std is not None else torch.zeros_like(mean))[:, None])
            bar.update(len(batch))
            if batch[-1] + 1 == min(first + CHUNK_SIZE, len(images)):  # the chunk is complete
                save_chunk(latents_dir, first // CHUNK_SIZE, torch.cat(means), torch.cat(stds),
                           torch.from_numpy(images.codes[first : batch[-1] + 1]))
                means, stds, first = [], [], None
    if state is not None:
        state.wait_for_everyone()  # every rank's chunks are on disk before rank 0 indexes them
    chunks = [{"file": CHUNK_PATTERN % (s // CHUNK_SIZE), "count": min(CHUNK_SIZE, len(images) - s)} for s in starts]
    return chunk_index(row_shape or [1, 0, 0, 0], CHUNK_SIZE, chunks, images.taxa)  # rank 0 encoded chunk 0


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

