"""LoRA on the UNet attention projections (docs/method.md §1.3): peft, rank 4, alpha 4, gaussian init,
``to_q``/``to_k``/``to_v``/``to_out.0`` of both self- and cross-attention, saved in the
``pytorch_lora_weights.safetensors`` format that diffusers' ``load_lora_weights`` reads."""

from __future__ import annotations

from pathlib import Path

from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers, convert_unet_state_dict_to_peft
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
LORA_FILE = "pytorch_lora_weights.safetensors"


def add_lora(unet, rank: int, alpha: int) -> None:
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=LORA_TARGETS))


def lora_parameters(unet):
    return [p for n, p in unet.named_parameters() if "lora_" in n]


def save_lora(unet, directory: str | Path) -> Path:
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    state = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
    StableDiffusionPipeline.save_lora_weights(str(directory), unet_lora_layers=state, safe_serialization=True)
    return Path(directory) / LORA_FILE


def load_lora(unet, directory: str | Path) -> None:
    """Load a saved LoRA into a UNet that already has the (same-shaped) adapter added."""
    state, _ = StableDiffusionPipeline.lora_state_dict(str(directory), weight_name=LORA_FILE)
    unet_state = {k[len("unet.") :]: v for k, v in state.items() if k.startswith("unet.")}
    result = set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(unet_state), adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"{directory}/{LORA_FILE}: unexpected LoRA keys {unexpected[:3]}")
