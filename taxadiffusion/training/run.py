"""One process's training run and the pure pieces of a step (docs/method.md §2, supplement A.2).

:class:`TrainModel` (UNet + condition module under one DDP wrapper), :class:`Run` (what every step reads and
updates), which parameters train (:func:`configure_trainable`) and the run's :func:`fingerprint` (a scratch
checkpoint is resumed only by the run that wrote it; the process count and the micro-batch are not in it: they do
not change what is trained, :mod:`taxadiffusion.training.batches`). The loop that uses them is
:mod:`taxadiffusion.training.train`; :mod:`taxadiffusion.training.checkpoints` saves and restores a :class:`Run`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler

from taxadiffusion.config import TrainConfig
from taxadiffusion.core.files import sha256_file
from taxadiffusion.models.base import BaseModel
from taxadiffusion.models.conditioner import CONDITION_FILE
from taxadiffusion.models.level import LevelConfig
from taxadiffusion.models.lora import LORA_FILE, lora_parameters
from taxadiffusion.models.text_cache import TextEmbeddingCache
from taxadiffusion.models.train_spec import TrainSpec
from taxadiffusion.training.batches import BatchPlan, Draws, micro_batch
from taxadiffusion.training.latent_chunks import LatentSource

log = logging.getLogger(__name__)


class TrainModel(torch.nn.Module):
    """UNet + condition module in one module so accelerate/DDP wraps every trainable tensor at once."""

    def __init__(self, unet, conditioner):
        super().__init__()
        self.unet = unet
        self.conditioner = conditioner

    def forward(self, noisy, timesteps, hidden, cut_off: int, prompt_only: bool = False):
        context = hidden[:, 0] if prompt_only else self.conditioner(hidden, cut_off)
        return self.unet(noisy, timesteps, context.to(noisy.dtype)).sample


def configure_trainable(unet, conditioner, spec: TrainSpec) -> None:
    """Freeze everything, then switch on exactly what this stage trains (docs/method.md §2).

    Frozen level modules still run in the forward, in eval mode (no dropout); the official code leaves
    them in train mode (docs/deviations.md).
    """
    unet.requires_grad_(False)
    conditioner.requires_grad_(False)
    if spec.full_unet:
        unet.requires_grad_(True)
    elif spec.train_lora:
        for p in lora_parameters(unet):
            p.requires_grad_(True)
    for i in spec.train_levels:
        conditioner.encoders[i].requires_grad_(True)
    unet.train(spec.train_lora or spec.full_unet)
    conditioner.eval()
    for i in spec.train_levels:
        conditioner.encoders[i].train()


def fingerprint(config: LevelConfig, parent_dir: Path | None) -> str:
    """Identity of a run: a scratch checkpoint is resumed only by the run that wrote it."""
    h = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True, default=str).encode())
    for name in (CONDITION_FILE, LORA_FILE) if parent_dir is not None else ():
        if (parent_dir / name).exists():
            h.update(sha256_file(parent_dir / name).encode())
    return h.hexdigest()[:16]


@dataclass
class Run:
    """One process's training run: what every step reads and updates."""

    accelerator: Accelerator
    cfg: TrainConfig
    spec: TrainSpec
    levels: list
    seed: int
    base: BaseModel  # its frozen parts (text encoder, VAE, scheduler config); the UNet is raw.unet
    config: LevelConfig
    model: torch.nn.Module  # as prepared by accelerate (DDP-wrapped with several processes)
    raw: TrainModel
    opt: torch.optim.Optimizer
    trainable: list
    latents: LatentSource  # len(), .rows(idx), .lineages (taxadiffusion/training/latent_chunks.py)
    lineages: list  # latents.lineages: one dict per image (a list-like view for the sd15 chunks)
    cache: TextEmbeddingCache
    scheduler: DDPMScheduler
    plan: BatchPlan  # the global batch as processes x micro-batches
    draws: Draws  # what every micro-batch's random draws depend on besides the step

    def micro_batches(self, step: int) -> list[dict]:
        """This process's micro-batches of ``step``, prepared here (a data loader prepares them ahead)."""
        rank = self.accelerator.process_index
        return [micro_batch(self.latents, self.draws, self.plan, step, k) for k in self.plan.micro_batches(rank)]
