"""(a) Training at level 0 (LoRA + condition module 0) and at level k >= 1 (module k alone): the project's step
(a :class:`Run` built by ``taxadiffusion.training.train.build_run``, timed through ``train_step``) against a
diffusers-style reference step doing the same work in the same process on the same device: the frozen UNet's
weights in bf16, fp32 LoRA parameters added with peft (as diffusers' ``train_text_to_image_lora.py``), the same
condition module in fp32, bf16 autocast, fused AdamW, the same batch and the same text-state shape
``[B, k + 1, T, D]`` (the project reads them from its text cache; the reference from a fixed tensor, as it would
from a cache), latents already encoded on both sides."""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import DDPMScheduler, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTokenizer

from gpu.flops import count_flops
from gpu.world import World, timed
from taxadiffusion.models.base import move
from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner, level_text, lineage_texts
from taxadiffusion.models.level import LevelConfig, write_level
from taxadiffusion.models.lora import LORA_TARGETS
from taxadiffusion.training.specs import progressive_spec
from taxadiffusion.training.train import TrainPaths, build_run, train_step


@dataclass
class Rate:
    """A measured rate and the FLOPs of one item (sample or image) of the measured call."""

    per_s: float
    gflop_per_item: float


def release() -> None:
    gc.collect()  # accelerate keeps its prepared models in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def level_dir(world: World, k: int):
    return world.work / "levels" / str(k)


def _project_run(world: World, k: int, parent: LevelConfig | None):
    """A Run built the way ``taxadiffusion.training.train.train`` builds one (level k from level 0's folder)."""
    params, levels = world.params, world.params.level_names
    spec = progressive_spec(params.train, levels, levels[k])
    config = LevelConfig.for_run(spec, params.train, params.model, levels, params.seed, parent)
    accelerator = Accelerator(mixed_precision=params.train.mixed_precision, cpu=world.device.type == "cpu")
    set_seed(params.seed)
    parent_dir = level_dir(world, 0) if k else None
    paths = TrainPaths(parent=parent_dir, out=level_dir(world, k), shards=world.shards, latents=world.latents,
                       scratch=world.work / f"scratch{k}", log_dir=world.work / f"log{k}")
    return build_run(accelerator, params.train, spec, config, parent_dir, paths, params.compute), config


def warm_text_cache(run, k: int) -> None:
    """Every level text the steps can ask for (each image's levels 0..k, and ``"<level>: None"`` of a dropped
    level) encoded once up front: the steady state of a long run, whose text cache fills in its first epoch."""
    species_text = run.cfg.species_text
    texts = {level_text(lv, None, species_text=species_text) for lv in run.levels[: k + 1]}
    for i in range(len(run.lineages)):
        texts.update(lineage_texts(run.levels, run.lineages[i], species_text=species_text)[: k + 1])
    run.cache.warm(sorted(texts))


def project_train(world: World, k: int, parent: LevelConfig | None, warmup: int, iters: int):
    """``(Rate, LevelConfig)`` of the project's training step at level ``k``; writes the level's folder."""
    run, config = _project_run(world, k, parent)
    warm_text_cache(run, k)
    steps = iter(range(10**9))
    seconds = timed(lambda: train_step(run, next(steps)), world.device, warmup, iters)
    _, flops = count_flops(train_step, run, next(steps))
    write_level(level_dir(world, k), config, run.raw.unet, run.raw.conditioner)
    batch = world.params.train.batch_size
    return Rate(batch / seconds, flops / batch / 1e9), config


def _reference_modules(world: World, k: int):
    """The bf16 frozen UNet with fp32 peft LoRA and the fp32 condition module; the parameters level k trains."""
    cfg, m, dev = world.params.train, world.params.model, world.device
    unet = move(UNet2DConditionModel.from_pretrained(world.model_dir, subfolder="unet"), dev, world.dtype)
    unet.requires_grad_(False)
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian",
                                target_modules=LORA_TARGETS))
    lora = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in lora:  # diffusers' cast_training_params(unet, torch.float32)
        p.data = p.data.float()
        p.requires_grad_(k == 0)
    levels = world.params.level_names
    cond = TaxonomyConditioner(ConditionerConfig(list(levels), unet.config.cross_attention_dim, m.cond_layers,
                                                 m.cond_heads, m.cond_ff, m.cond_dropout)).to(dev)
    cond.requires_grad_(False).eval()
    cond.encoders[k].requires_grad_(True).train()
    unet.train(k == 0)
    return unet, cond, (lora if k == 0 else []) + list(cond.encoders[k].parameters())


def reference_train(world: World, k: int, warmup: int, iters: int) -> Rate:
    """The diffusers-style step (module docstring) at level ``k``."""
    cfg, dev, dtype = world.params.train, world.device, world.dtype
    unet, cond, trainable = _reference_modules(world, k)
    lr = cfg.lr_first if k == 0 else cfg.lr
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay,
                            fused=dev.type == "cuda")
    sched = DDPMScheduler.from_pretrained(world.model_dir, subfolder="scheduler")
    batch, size = cfg.batch_size, unet.config.sample_size
    text_len = CLIPTokenizer.from_pretrained(world.model_dir, subfolder="tokenizer").model_max_length
    x0 = torch.randn(batch, unet.config.in_channels, size, size, device=dev)
    hidden = torch.randn(batch, k + 1, text_len, unet.config.cross_attention_dim, device=dev)

    def step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), device=dev)
        noisy = sched.add_noise(x0, noise, t)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = unet(noisy, t, cond(hidden, k).to(dtype)).sample
        loss = F.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = timed(step, dev, warmup, iters)
    _, flops = count_flops(step)
    return Rate(batch / seconds, flops / batch / 1e9)


def train_rows(world: World, k: int, warmup: int, iters: int) -> dict[str, tuple[Rate, Rate]]:
    """``{label: (project, reference)}`` for level 0 and level ``k``; leaves both level folders written."""
    ours0, config0 = project_train(world, 0, None, warmup, iters)
    release()  # each side's model leaves the device before the next one is built
    ref0 = reference_train(world, 0, warmup, iters)
    release()
    oursk, _ = project_train(world, k, config0, warmup, iters)
    release()
    refk = reference_train(world, k, warmup, iters)
    release()
    name = world.params.level_names[k]
    return {"(a) train level 0 (LoRA + module 0), samples/s": (ours0, ref0),
            f"(a) train level {k} '{name}' (module {k} only), samples/s": (oursk, refk)}
