"""Pretrain the `tiny` base model once, on the captioned *pretraining world* (it plays SD1.5's role).

Recipe (``assets/tiny-base/recipe.yaml``, recorded in ``manifest.json`` with the output hashes)::

    taxadiffusion pretrain --recipe assets/tiny-base/recipe.yaml --out assets/tiny-base

The pretraining world is the synthetic generator with random trait combinations and plain-words captions
("a long red striped animal with a forked tail"), the analogue of SD's captioned web images. The UNet is
caption-conditioned through the same frozen text encoder the fine-tuning uses, trained with the base's own
objective (v-prediction, cosine schedule; docs/install.md), 10% empty captions (for guidance) and an
EMA of its weights, which is what ships. It is a one-off of an hour or more on 2 CPU cores, minutes on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from taxadiffusion.cli import run_tool
from taxadiffusion.config import ModelConfig
from taxadiffusion.core.device import default_device
from taxadiffusion.core.errors import UserError
from taxadiffusion.data import animals
from taxadiffusion.models import tiny
from taxadiffusion.models.base import file_hashes, load_base
from taxadiffusion.models.text_cache import TextEmbeddingCache
from taxadiffusion.sampling.denoise import make_scheduler, sample, to_uint8
from taxadiffusion.sampling.draw import grid
from taxadiffusion.training.noise import PREDICTION_TYPES, forward_process

LEVEL_WORDS = ["kingdom", "phylum", "class", "order", "family", "genus", "specific", "epithet", "species", "none"]

DEFAULT_RECIPE = dict(
    seed=0,
    steps=20000,
    batch_size=256,
    lr=1e-3,
    warmup=500,
    weight_decay=0.01,
    ema_decay=0.999,
    max_grad_norm=1.0,
    pool_size=300000,
    workers=0,  # 0: os.cpu_count()
    max_seconds=0,  # safety stop (0: none); the steps actually run are recorded in the manifest
)


def build_components(out: Path, seed: int):
    """Tokenizer / frozen text encoder / VAE / scheduler configs (written once, then reused) + a fresh UNet.

    The frozen text encoder is a seeded random init written to ``out`` the first time; later runs (and
    the GPU machine) load that same file, so the UNet is always trained against the shipped encoder.
    """
    if not (out / "text_encoder" / "model.safetensors").exists():
        words = animals.pretraining_vocabulary() + LEVEL_WORDS
        tiny.write_tokenizer(words, out / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
        torch.manual_seed(seed)
        CLIPTextModel(CLIPTextConfig(**tiny.text_encoder_config(len(tokenizer)))).save_pretrained(out / "text_encoder")
        tiny.SpaceToDepthVAE().save_config(out / "vae")
        (out / "scheduler").mkdir(parents=True, exist_ok=True)
        (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(tiny.scheduler_config(), indent=2))
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder")
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**tiny.unet_config())
    return tokenizer, text_encoder, unet


def _render_chunk(args):
    seed, n = args
    rng = np.random.default_rng(seed)
    return animals.sample_pretraining_batch(n, rng)


def render_pool(size: int, seed: int, workers: int):
    chunk = 2000
    jobs = [(seed * 100003 + i, min(chunk, size - i * chunk)) for i in range(math.ceil(size / chunk))]
    images, captions = [], []
    with mp.get_context("fork").Pool(workers) as pool:
        for imgs, caps in pool.imap(_render_chunk, jobs):
            images.append(imgs)
            captions.extend(caps)
    return np.concatenate(images), captions


def load_recipe(args) -> dict:
    recipe = dict(DEFAULT_RECIPE)
    if Path(args.recipe).exists():
        recipe.update(yaml.safe_load(Path(args.recipe).read_text()) or {})
    if args.steps is not None:
        recipe["steps"] = args.steps
    if args.pool_size is not None:
        recipe["pool_size"] = args.pool_size
    return recipe


def tokenized_pool(recipe: dict, tokenizer, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rendered pretraining images (uint8 ``[N, H, W, 3]``) and their caption token ids, on ``device``."""
    t0 = time.time()
    workers = int(recipe["workers"]) or mp.cpu_count()
    images, captions = render_pool(int(recipe["pool_size"]), int(recipe["seed"]), workers)
    print(f"rendered {len(images)} pretraining images in {time.time() - t0:.1f}s with {workers} workers", flush=True)
    t0 = time.time()
    ids = tokenizer(captions, padding="max_length", max_length=tiny.TEXT_MAX_LENGTH, truncation=True,
                    return_tensors="pt").input_ids
    print(f"tokenized in {time.time() - t0:.1f}s", flush=True)
    return torch.from_numpy(images).to(device), ids.to(device)


def pretrain_unet(recipe: dict, text_encoder, unet, pool: torch.Tensor, ids: torch.Tensor, device) -> dict:
    """Train ``unet`` on the pool (the base's own objective), then copy its EMA weights into it."""
    scheduler = noise_scheduler_for_pretraining()
    vae = tiny.SpaceToDepthVAE()
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / recipe["warmup"])
        * 0.5 * (1 + math.cos(math.pi * min(1.0, s / recipe["steps"]))),
    )
    ema = EMAModel(unet.parameters(), decay=recipe["ema_decay"], foreach=True)
    ema.to(device)
    gen = torch.Generator(device=device).manual_seed(int(recipe["seed"]) + 2)
    t_start = time.time()
    losses = []
    for step in range(int(recipe["steps"])):
        idx = torch.randint(0, len(pool), (recipe["batch_size"],), device=device, generator=gen)
        x = pool[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x0 = vae.encode(x).latent_dist.sample()
        noise = torch.randn(x0.shape, device=device, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), device=device, generator=gen)
        xt, target = forward_process(scheduler, x0, noise, t)
        with torch.no_grad():
            ctx = text_encoder(ids[idx])[0]
        pred = unet(xt, t, ctx).sample
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), recipe["max_grad_norm"])
        opt.step()
        sched.step()
        ema.step(unet.parameters())
        losses.append(loss.item() if step % 50 == 0 else losses[-1] if losses else loss.item())
        stop = recipe.get("max_seconds") and time.time() - t_start > recipe["max_seconds"]
        if step % 500 == 0 or step == recipe["steps"] - 1 or stop:
            rate = (step + 1) / (time.time() - t_start)
            print(f"step {step} loss {np.mean(losses[-500:]):.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{rate:.1f} steps/s", flush=True)
        if stop:
            break
    ema.copy_to(unet.parameters())
    unet.eval()
    return {"steps_done": step + 1, "train_seconds": round(time.time() - t_start, 1),
            "final_loss": float(np.mean(losses[-500:]))}


def noise_scheduler_for_pretraining() -> DDPMScheduler:
    """The tiny base's own schedule (v-prediction, cosine); its prediction type is checked as training does."""
    scheduler = DDPMScheduler.from_config(tiny.scheduler_config())
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise UserError(f"tiny.scheduler_config: prediction_type={scheduler.config.prediction_type!r}; "
                        f"expected {' or '.join(PREDICTION_TYPES)}")
    return scheduler


@torch.no_grad()
def sample_captions_grid(base_dir, out_png, device="cpu", captions=None, per_caption=6, steps=50, scale=3.0):
    """Preview of the pretrained tiny base (``taxadiffusion pretrain --samples``): rows = captions, CFG against
    ``""``."""
    # load_base reads preset, pretrained and revision only; the condition-module sizes are placeholders
    cfg = ModelConfig(preset="tiny", pretrained=str(base_dir), revision=None, cache_latents=False, cond_layers=1,
                      cond_heads=1, cond_ff=1, cond_dropout=0.0)
    base = load_base(cfg, device=device)
    captions = captions or [
        "a long red striped animal with a forked tail",
        "a round blue spotted animal with a fan tail",
        "a tall yellow plain animal with a pointed tail",
        "a slender green banded animal",
        "",
    ]
    cache = TextEmbeddingCache(base.text_encoder, base.tokenizer, device=device)
    texts = [c for c in captions for _ in range(per_caption)]
    cond = cache(texts)
    neg = cache([""] * len(texts))
    sched = make_scheduler("ddim", base.scheduler_config)
    shape = (base.unet.config.in_channels, base.unet.config.sample_size, base.unet.config.sample_size)
    lat = sample(base.unet, sched, cond, neg, list(range(len(texts))), shape, steps, scale)
    img = to_uint8(base.decode_latents(lat))
    grid(img, rows=len(captions)).resize((per_caption * 64, len(captions) * 64), 0).save(out_png)
    return out_png


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taxadiffusion pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="assets/tiny-base/recipe.yaml")
    parser.add_argument("--out", default="assets/tiny-base")
    parser.add_argument("--steps", type=int, default=None, help="override recipe steps (smoke runs)")
    parser.add_argument("--pool-size", type=int, default=None)
    parser.add_argument("--samples", default=None, help="write a sample grid PNG here")
    parser.add_argument("--init-only", action="store_true", help="write the frozen components and stop")
    return parser


def run(args: argparse.Namespace) -> None:
    recipe = load_recipe(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = default_device()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tokenizer, text_encoder, unet = build_components(out, int(recipe["seed"]))
    if args.init_only:
        return
    text_encoder.to(device).eval().requires_grad_(False)
    unet.to(device).train()
    pool, ids = tokenized_pool(recipe, tokenizer, device)
    result = pretrain_unet(recipe, text_encoder, unet, pool, ids, device)
    unet.save_pretrained(out / "unet")
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    manifest = {
        "recipe": recipe,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        **result,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "files": file_hashes(out),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps({k: v for k, v in manifest.items() if k != "files"}, indent=2))
    if args.samples:
        sample_captions_grid(out, args.samples, device=device)


def main(argv: list[str] | None = None) -> None:
    run_tool(run, parser(), argv)


if __name__ == "__main__":
    main()
