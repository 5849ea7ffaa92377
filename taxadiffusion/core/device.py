"""Where computation runs: one rule for every stage."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` / ``"auto"`` -> :func:`default_device`; anything else as torch reads it (``cuda:1``)."""
    if device in (None, "auto"):
        return default_device()
    return torch.device(device)


def on_cpu_only() -> bool:
    """accelerate needs ``cpu=True`` on a machine without GPUs, or its ranks run as independent processes."""
    return not torch.cuda.is_available()


def fast_matmuls(device: torch.device) -> None:
    """TF32 matmuls and convolutions on an NVIDIA GPU (Ampere and later), as PyTorch's and diffusers' docs
    recommend for training: fp32 ops (the trainable fp32 parameters' updates, fp32 runs) at tensor-core speed with a
    10-bit mantissa. Nothing changes on the CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
