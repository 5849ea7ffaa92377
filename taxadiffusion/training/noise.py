"""The forward (noising) process of training: the noise scheduler and the regression target.

Shared by progressive training (:mod:`taxadiffusion.training.train`) and the tiny base's one-off pretraining
(:mod:`taxadiffusion.tools.pretrain`); ``add_noise`` / ``get_velocity`` are diffusers' own.
"""

from __future__ import annotations

import logging

import torch
from diffusers import DDPMScheduler

from taxadiffusion.core.errors import UserError
from taxadiffusion.models.base import BaseModel

log = logging.getLogger(__name__)


PREDICTION_TYPES = ("epsilon", "v_prediction")


def noise_scheduler(base: BaseModel, schedule: str) -> DDPMScheduler:
    """Training schedule (``train.noise_schedule``, one of ``config.NOISE_SCHEDULES``): the base model's own
    (SD1.5: scaled_linear, epsilon) unless overridden. ``linear`` reproduces the official code's training betas
    (docs/deviations.md)."""
    config = {k: v for k, v in base.scheduler_config.items() if k != "_class_name"}
    if schedule != "base":
        config["beta_schedule"] = schedule
    scheduler = DDPMScheduler.from_config(config)
    prediction = scheduler.config.prediction_type
    if prediction not in PREDICTION_TYPES:
        raise UserError(f"{base.source}: scheduler prediction_type={prediction!r}; training supports "
                        f"{' or '.join(PREDICTION_TYPES)}")
    return scheduler


def forward_process(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    """``(noisy, target)``: ``x0`` noised to step ``t`` and the regression target of the base's objective."""
    noisy = scheduler.add_noise(x0, noise, t)
    if scheduler.config.prediction_type == "epsilon":
        return noisy, noise
    return noisy, scheduler.get_velocity(x0, noise, t)
