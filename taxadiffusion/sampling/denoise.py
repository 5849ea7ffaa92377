"""The denoising loop: schedulers, per-image noise, and the TaxaGuide / CFG update (docs/method.md §3).

TaxaGuide: the conditional branch is the lineage encoded up to the target level; the guidance ("negative")
branch is the *same lineage* encoded with the level-0 module only. Update in the diffusers convention
``out = out_neg + s * (out_cond - out_neg)`` (s = ``guidance_scale``; the paper's ``(1+w)`` form with
s = 1 + w). Both branches go through the UNet in one batched call. Outside ``guidance_range`` (fraction of
the steps, official ``range_guidance``) a single conditional pass is used.

This module knows tensors and schedulers only: what the contexts are and how the UNet is called (fixed
shapes, ``level_sampler.py``) is decided by the caller.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

SCHEDULERS = {  # one per ``generate.sampler`` (config.SAMPLERS, validated when params.yaml is read)
    "pndm": lambda config: PNDMScheduler.from_config({**config, "skip_prk_steps": True}),
    "ddpm": DDPMScheduler.from_config,
    "ddim": DDIMScheduler.from_config,
    "dpmsolver++": lambda config: DPMSolverMultistepScheduler.from_config({**config, "algorithm_type": "dpmsolver++"}),
    "unipc": UniPCMultistepScheduler.from_config,  # UniPC-bh2, order 2 (diffusers' defaults); deterministic
}


def make_scheduler(name: str, base_config: dict):
    """A diffusers scheduler of kind ``name`` (one of ``config.SAMPLERS``) configured from the base model's own
    schedule."""
    return SCHEDULERS[name]({k: v for k, v in base_config.items() if k != "_class_name"})


def initial_noise(shape: Sequence[int], seeds: Sequence[int], device, dtype=torch.float32) -> torch.Tensor:
    """Per-image noise from per-image seeds: an image's pixels do not depend on its batch."""
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens]).to(device=device, dtype=dtype)


def guided_step_output(unet, latents, t, cond, neg, scale: float, guided: bool):
    """One UNet evaluation with TaxaGuide/CFG; ``neg`` None or ``guided`` False -> conditional only."""
    if neg is None or not guided:
        return unet(latents, t, cond).sample
    both = unet(torch.cat([latents, latents]), t, torch.cat([neg, cond])).sample
    out_neg, out_cond = both.chunk(2)
    return out_neg + scale * (out_cond - out_neg)


# structure: the loop's inputs are all distinct (contexts, noise seeds, shape, schedule), as in diffusers' __call__
@torch.no_grad()
def sample(
    unet,
    scheduler,
    cond: torch.Tensor,
    neg: torch.Tensor | None,
    seeds: Sequence[int],
    latent_shape: Sequence[int],
    num_inference_steps: int,
    guidance_scale: float,
    guidance_range: Sequence[float] = (0.0, 1.0),
    dtype: torch.dtype = torch.float32,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Denoise one batch; returns latents ``[B, *latent_shape]`` in float32.

    ``cond``/``neg``: ``[B, T, D]`` contexts. Stochastic samplers (ddpm) draw their per-step noise from
    per-image generators seeded from ``seeds``, so results do not depend on batch composition.
    ``on_step()`` is called after every denoising step (progress bars).
    """
    device = cond.device
    scheduler.set_timesteps(num_inference_steps, device=device)
    latents = initial_noise(latent_shape, seeds, device) * scheduler.init_noise_sigma
    gens = [torch.Generator(device="cpu").manual_seed(int(s) + 1) for s in seeds]
    lo, hi = guidance_range
    timesteps = scheduler.timesteps
    n = len(timesteps)
    cond = cond.to(dtype)
    neg = neg.to(dtype) if neg is not None else None
    kwargs = {"generator": gens} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for i, t in enumerate(timesteps):
        guided = lo * n <= i <= hi * n
        model_in = scheduler.scale_model_input(latents, t).to(dtype)
        out = guided_step_output(unet, model_in, t, cond, neg, guidance_scale, guided).float()
        latents = scheduler.step(out, t, latents, **kwargs).prev_sample
        if on_step is not None:
            on_step()
    return latents


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float ``[B, 3, H, W]`` -> uint8 ``[B, H, W, 3]`` on CPU."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
