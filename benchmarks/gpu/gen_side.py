"""(b) Generation: the project's sampler (``load_sampler`` + ``TaxaSampler.draw``: LoRA merged, fixed-row UNet
chunks, TaxaGuide, VAE decode) against a stock ``diffusers.StableDiffusionPipeline`` with the same LoRA fused,
the same contexts (``prompt_embeds`` / ``negative_prompt_embeds``), PNDM scheduler, steps, dtype and batch (both
2 UNet rows per image); (c) the sampler's UNet forward alone at several batch sizes; (d) the ``base`` stage's
encode function (``training.latents.encode_posterior``) on a batch of 512 px images."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from gpu.flops import count_flops
from gpu.train_side import Rate, level_dir
from gpu.world import World, timed
from taxadiffusion.data.shard_reader import load_split_arrays
from taxadiffusion.models.base import move
from taxadiffusion.sampling.denoise import make_scheduler
from taxadiffusion.sampling.level_sampler import TaxaSampler, load_sampler
from taxadiffusion.training.latents import encode_posterior


def project_sampler(world: World, k: int) -> TaxaSampler:
    """The trained level k loaded for sampling as the ``generate`` stage loads it; its VAE in the compute dtype
    (the stage keeps it in fp32) so that both sides decode alike."""
    sampler = load_sampler(level_dir(world, k), world.params.model, world.params.sampling, k, world.device)
    move(sampler.model.base.vae, world.device, sampler.dtype)
    return sampler


def lineages(world: World, batch: int) -> list[dict]:
    _, lins = load_split_arrays(world.shards, "train")
    return [lins[i % len(lins)] for i in range(batch)]


def sampler_rate(world: World, sampler: TaxaSampler, batch: int, warmup: int, iters: int) -> Rate:
    lins, seeds = lineages(world, batch), list(range(batch))
    seconds = timed(lambda: sampler.draw(lins, seeds), world.device, warmup, iters)
    _, flops = count_flops(sampler.draw, lins, seeds)
    return Rate(batch / seconds, flops / batch / 1e9)


def stock_pipeline(world: World, k: int, scheduler_config: dict, dtype: torch.dtype) -> StableDiffusionPipeline:
    d = world.model_dir
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(d, subfolder="vae"),
        text_encoder=CLIPTextModel.from_pretrained(d, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(d, subfolder="tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(d, subfolder="unet"),
        scheduler=make_scheduler(world.params.sampling.sampler, scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(level_dir(world, k)))
    pipe.fuse_lora()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(world.device, dtype)


def pipeline_rate(world: World, sampler: TaxaSampler, k: int, batch: int, warmup: int, iters: int) -> Rate:
    """The stock pipeline on the sampler's own contexts of the same lineages (TaxaGuide's negative branch)."""
    pairs = [sampler.context(lin) for lin in lineages(world, batch)]
    s = world.params.sampling
    pipe = stock_pipeline(world, k, sampler.model.base.scheduler_config, sampler.dtype)
    kwargs = {"prompt_embeds": torch.cat([c for c, _ in pairs]).to(sampler.dtype),
              "negative_prompt_embeds": torch.cat([n for _, n in pairs]).to(sampler.dtype),
              "num_inference_steps": s.steps, "guidance_scale": s.scale, "height": world.resolution,
              "width": world.resolution, "output_type": "np"}

    def call():
        return pipe(generator=[torch.Generator().manual_seed(i) for i in range(batch)], **kwargs).images

    seconds = timed(call, world.device, warmup, iters)
    _, flops = count_flops(call)
    return Rate(batch / seconds, flops / batch / 1e9)


@torch.no_grad()
def unet_rates(world: World, sampler: TaxaSampler, batches, warmup: int, iters: int) -> dict[int, Rate]:
    """The sampler's UNet (LoRA merged, channels-last, compute dtype) forward alone, per batch of latents."""
    unet, dev = sampler.model.base.unet, world.device
    size, width = unet.config.sample_size, unet.config.cross_attention_dim
    text_len = sampler.model.cache.max_length
    out = {}
    for batch in batches:
        x = torch.randn(batch, unet.config.in_channels, size, size, device=dev, dtype=sampler.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.randn(batch, text_len, width, device=dev, dtype=sampler.dtype)
        t = torch.full((batch,), 500, device=dev)
        seconds = timed(lambda: unet(x, t, ctx).sample, dev, warmup, iters)
        _, flops = count_flops(lambda: unet(x, t, ctx).sample)
        out[batch] = Rate(batch / seconds, flops / batch / 1e9)
    return out


def encode_rates(world: World, sampler: TaxaSampler, batch: int, warmup: int, iters: int) -> dict[str, Rate]:
    """``encode_posterior`` (what the ``base`` stage runs per batch of uint8 images) with the VAE in the compute
    dtype and in fp32 (the stage as it is: its VAE is loaded in fp32)."""
    base = sampler.model.base
    images = np.random.default_rng(0).integers(0, 256, (batch, world.resolution, world.resolution, 3), np.uint8)
    out = {}
    for dtype in dict.fromkeys((world.dtype, torch.float32)):
        move(base.vae, world.device, dtype)
        seconds = timed(lambda: encode_posterior(base, images), world.device, warmup, iters)
        _, flops = count_flops(encode_posterior, base, images)
        out[str(dtype).removeprefix("torch.")] = Rate(batch / seconds, flops / batch / 1e9)
    return out
