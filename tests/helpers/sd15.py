"""A miniature Stable Diffusion 1.5 for tests: SD1.5's architecture family and folder layout, random weights.

``make_mini_sd15(folder)`` writes a ``StableDiffusionPipeline`` with ``save_pretrained`` (the diffusers layout
``unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json``): an ``AutoencoderKL`` with SD1.5's four
down blocks (an 8x VAE) and 4 latent channels, a small ``UNet2DConditionModel`` with cross-attention, the tiny
base's small CLIP text encoder and tokenizer (``assets/tiny-base``) and SD1.5's PNDM scheduler config
(``assets/sd15/scheduler``). Native resolution :data:`RESOLUTION` px (4 x 4 x 4 latents). Seeded: the same
seed writes the same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "assets" / "tiny-base"
RESOLUTION = 32  # = unet.sample_size (4) x the VAE's 2 ** (4 blocks - 1)


def make_mini_sd15(folder: str | Path, seed: int = 0, resolution: int = RESOLUTION,
                   vae_channels: tuple = (8, 16, 16, 16), vae_groups: int = 8) -> Path:
    """Write the miniature SD1.5 folder (module docstring) and return it. ``vae_channels``: one VAE block per
    entry (each after the first halves the size), so the latents are ``resolution / 2 ** (len - 1)`` px."""
    folder = Path(folder)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel.from_pretrained(TINY, subfolder="text_encoder")  # hidden 64, 32 tokens
    blocks = len(vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(vae_channels), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        norm_num_groups=vae_groups, sample_size=resolution, scaling_factor=0.18215,
    )
    unet = UNet2DConditionModel(
        sample_size=resolution // 2 ** (blocks - 1), in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=text_encoder.config.hidden_size,
        attention_head_dim=8, norm_num_groups=32,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(TINY, subfolder="tokenizer"),
        unet=unet, scheduler=PNDMScheduler.from_pretrained(REPO / "assets" / "sd15", subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def mini_sd15_params(folder: str | Path) -> dict:
    """Overrides (``helpers.params.tiny_params(**...)``) that run the pipeline on the miniature: the ``sd15`` preset,
    its native resolution, a one-layer condition module of its text width."""
    return {"model.preset": "sd15", "model.pretrained": str(folder), "model.cache_latents": True,
            "model.cond_layers": 1, "model.cond_heads": 4, "model.cond_ff": 64, "dataset.resolution": RESOLUTION}


SMALL_RESOLUTION = 16  # 8 x 8 latents, a VAE with one 2x downsampling


def make_small_sd15(folder: str | Path, seed: int = 0) -> Path:
    """The miniature at :data:`SMALL_RESOLUTION` px (two VAE blocks of 32 channels), written by ``save_pretrained``."""
    return make_mini_sd15(folder, seed, resolution=SMALL_RESOLUTION, vae_channels=(32, 32), vae_groups=32)
