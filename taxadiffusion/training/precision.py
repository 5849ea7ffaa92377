"""Which weights train in which dtype (``train.mixed_precision``), as diffusers' training examples do.

Under bf16 / fp16 autocast the frozen base weights (UNet, VAE, text encoder) are cast to the compute dtype: half
the memory and no per-step casts. Trainable parameters stay fp32 (the optimiser's updates would vanish in bf16),
and so does the LoRA where it is frozen (level >= 1 writes it into its folder again, unchanged) and the condition
module (a few MB).
"""

from __future__ import annotations

import torch

from taxadiffusion.models.base import BaseModel, move
from taxadiffusion.models.lora import lora_parameters

COMPUTE_DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def frozen_in_compute_dtype(base: BaseModel, unet: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast the frozen base weights of ``unet`` (trainable ones and the LoRA stay fp32), the VAE and the text
    encoder to ``dtype``; fp32 changes nothing."""
    if dtype == torch.float32:
        return
    keep = {id(p) for p in lora_parameters(unet)}
    for p in unet.parameters():
        if not p.requires_grad and id(p) not in keep:
            p.data = p.data.to(dtype)
    device = next(unet.parameters()).device
    for module in (base.vae, base.text_encoder):
        if module is not None:
            move(module, device, dtype)  # (no diffusers warning about float32 modules that the model does not name)
