"""Which samples each process trains on in an optimiser step, and every random draw of each sample.

``train.batch_size`` is the global batch B of one optimiser step, however the run is launched. With W processes
(``compute.processes`` x ``compute.nodes``) each process owns B / W samples of the step, taken as A micro-batches
of m samples (``compute.micro_batch`` caps m; gradient accumulation adds the A gradients up, DDP averages the W
processes): micro-batch k of a step holds the step's samples k*m ... (k+1)*m - 1 and rank r trains micro-batches
r*A ... (r+1)*A - 1 (:class:`BatchPlan`).

Every draw of a sample (which image, its VAE posterior sample, the dropped level, the noise and the timestep) is a
function of (seed, step, the sample's position in the step) alone, and the condition module's dropout of (seed,
step, the micro-batch's first position): so 1 process x 4 micro-batches, 2 x 2 and 4 x 1 draw the same numbers,
and a run resumed under another process count continues the same stream. What differs is the order in which
float sums are added (docs/scale-out.md: the measured difference). :func:`micro_batch` is pure and picklable, so
``compute.num_workers`` data-loader processes can prepare the next micro-batches while the GPU trains.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from taxadiffusion.core.errors import UserError
from taxadiffusion.core.lineage import stable_int
from taxadiffusion.training.latent_chunks import LatentSource


@dataclass(frozen=True)
class BatchPlan:
    """The global batch split into processes and micro-batches (module docstring)."""

    batch: int  # train.batch_size: samples per optimiser step, all processes together
    world: int  # processes
    micro: int  # samples per micro-batch

    @classmethod
    def of(cls, batch: int, world: int, micro_cap: int) -> BatchPlan:
        """The plan for ``world`` processes; ``micro_cap`` (compute.micro_batch, 0: none) bounds the micro-batch:
        a process's share is split into the fewest equal micro-batches no larger than it."""
        if batch % world:
            raise UserError(f"params.yaml train.batch_size={batch}: not divisible by the {world} training processes "
                            "(compute.processes x compute.nodes); use a multiple of the process count")
        share = batch // world
        cap = share if micro_cap == 0 else min(micro_cap, share)
        micro = max(d for d in range(1, cap + 1) if share % d == 0)
        return cls(batch=batch, world=world, micro=micro)

    @property
    def accumulation(self) -> int:
        """Micro-batches per process and optimiser step."""
        return self.batch // (self.world * self.micro)

    def micro_batches(self, rank: int) -> range:
        """The step's micro-batch numbers that process ``rank`` trains."""
        return range(rank * self.accumulation, (rank + 1) * self.accumulation)

    def positions(self, k: int) -> range:
        """The step's sample positions in micro-batch ``k``."""
        return range(k * self.micro, (k + 1) * self.micro)


def keyed_rng(*key: int) -> torch.Generator:
    """A CPU generator seeded by a hash of ``key`` (``core.lineage.stable_int``): the same numbers on every machine
    and device."""
    return torch.Generator().manual_seed(stable_int(*key) & (2**63 - 1))


def step_rng(seed: int, step: int) -> torch.Generator:
    """What one whole step shares (the random_level ablation's cut-off): the same on every process."""
    return keyed_rng(seed, step)


def dropout_seed(seed: int, step: int, first: int) -> int:
    """The global torch seed of a micro-batch's forward pass (the condition module's dropout masks)."""
    return int(torch.randint(0, 2**62, (1,), generator=keyed_rng(seed, step, first, 1)))


def sample_indices(n: int, batch: int, step: int, positions: Sequence[int], seed: int) -> np.ndarray:
    """The dataset rows at ``positions`` of global batch ``step``: positions ``step * batch + j`` of a stream of
    seeded per-epoch permutations of the ``n`` rows (every image once per epoch)."""
    out = []
    for j in positions:
        epoch, offset = divmod(step * batch + j, n)
        out.append(_epoch_order(n, seed, epoch)[offset])
    return np.asarray(out, dtype=np.int64)


@functools.lru_cache(maxsize=2)  # an epoch spans many micro-batches (and a step may cross into the next epoch)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` rows in ``epoch`` (20 ms at BIOSCAN-1M's 1.1M rows: once per epoch, not per call)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def drop_level(lineage: dict, levels: list[str], p: float, u: float) -> dict:
    """Condition dropout as the official FishNet/BIOSCAN loader (docs/method.md §2): with probability ``p`` each,
    exactly one level becomes ``None`` (``randint(0, 20)`` over 5 levels = 1/21 per level), so at most one level per
    sample; ``u`` is the sample's uniform draw. ``p`` is in [0, 1/L] (``train.level_dropout``, checked in config)."""
    j = int(u // p) if p > 0 else len(levels)
    if j >= len(levels):
        return lineage
    lineage = dict(lineage)
    lineage[levels[len(levels) - 1 - j]] = None  # j=0 -> the finest level first, as the official code
    return lineage


@dataclass(frozen=True)
class Draws:
    """What a micro-batch's draws depend on besides the step (one per run)."""

    seed: int
    batch: int  # train.batch_size
    levels: list
    level_dropout: float
    num_train_timesteps: int


def micro_batch(source: LatentSource, draws: Draws, plan: BatchPlan, step: int, k: int) -> dict:
    """Micro-batch ``k`` of step ``step`` on the CPU: ``x0``, ``noise``, ``t`` (tensors), ``lineages`` (after
    condition dropout), ``step`` and ``first`` (its first position). Each sample draws, from its own generator and
    in this order: a view (several views), a posterior sample (a VAE posterior), the dropout uniform, the noise and
    the timestep; nothing else draws from it."""
    positions = plan.positions(k)
    idx = sample_indices(len(source), draws.batch, step, positions, draws.seed)
    gens = [keyed_rng(draws.seed, step, j) for j in positions]
    mean, std = source.rows(idx)
    x0 = torch.stack([posterior_sample(mean[i], None if std is None else std[i], g) for i, g in enumerate(gens)])
    lineages, noise, t = [], [], []
    for i, g in zip(idx, gens):
        u = float(torch.rand((), generator=g))
        lineages.append(drop_level(source.lineages[int(i)], draws.levels, draws.level_dropout, u))
        noise.append(torch.randn(x0.shape[1:], generator=g))
        t.append(torch.randint(0, draws.num_train_timesteps, (), generator=g))
    return {"x0": x0, "noise": torch.stack(noise), "t": torch.stack(t), "lineages": lineages,
            "index": torch.from_numpy(idx), "step": step, "first": positions.start}


def posterior_sample(mean: torch.Tensor, std: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """fp32 ``[C, h, w]`` from one image's ``[K, C, h, w]`` views: a view (K > 1), then a posterior sample."""
    view = int(torch.randint(0, mean.shape[0], (), generator=gen)) if mean.shape[0] > 1 else 0
    x = mean[view].float()
    if std is None:
        return x
    return x + std[view].float() * torch.randn(x.shape, generator=gen)


class MicroBatches(torch.utils.data.Dataset):
    """The micro-batches a process trains from ``start`` to ``stop`` (optimiser steps), in order, as a dataset for a
    :class:`torch.utils.data.DataLoader` (``compute.num_workers`` worker processes prepare them ahead)."""

    def __init__(self, source: LatentSource, draws: Draws, plan: BatchPlan, rank: int, start: int, stop: int):
        self.source, self.draws, self.plan, self.rank = source, draws, plan, rank
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return (self.stop - self.start) * self.plan.accumulation

    def __getitem__(self, i: int) -> dict:
        step, a = divmod(i, self.plan.accumulation)
        return micro_batch(self.source, self.draws, self.plan, self.start + step,
                           self.plan.micro_batches(self.rank)[a])
