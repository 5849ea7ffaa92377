"""Training-speed benchmarks (issue: model and progressive training).

(a) This trainer vs a reference-style loop (the official code's: every step re-encodes the level texts with
    the text encoder and the images with the VAE) on the SD1.5 architecture with random weights, at a reduced
    resolution, on CPU. Both run level 0 (LoRA + module 0) with the same batch; the trainer is the real
    ``taxadiffusion.training.train`` (cached latents from the ``base`` stage, cached text states).
(b) The tiny preset: one training step at batch 32 (32x32) and one guided 250-step sampling of 64 images.

    python benchmarks/bench_train.py [--resolution 128] [--batch 4] [--steps 6] [--skip-a] [--skip-b]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from taxadiffusion.config import params_from_dict, read_params_dict, section_from_dict
from taxadiffusion.core.device import default_device
from taxadiffusion.data import animals
from taxadiffusion.data import synthesize as synthetic
from taxadiffusion.data.shard_reader import load_split_arrays
from taxadiffusion.models.base import load_base
from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner, lineage_texts
from taxadiffusion.models.lora import add_lora, lora_parameters
from taxadiffusion.models.tiny import write_tokenizer
from taxadiffusion.models.train_spec import TrainSpec
from taxadiffusion.sampling.denoise import make_scheduler, sample
from taxadiffusion.sampling.level_sampler import prepare_unet_for_sampling
from taxadiffusion.training.base import prepare_base
from taxadiffusion.training.run import TrainModel, configure_trainable
from taxadiffusion.training.specs import progressive_spec
from taxadiffusion.training.train import TrainPaths, train

REPO = Path(__file__).resolve().parents[1]


def build_random_sd15(folder: Path, resolution: int) -> None:
    """SD1.5 UNet/VAE/CLIP-L from the configs in assets/sd15 with random weights (UNet sample_size reduced)."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sd = REPO / "assets" / "sd15"
    torch.manual_seed(0)
    unet_cfg = UNet2DConditionModel.load_config(sd / "unet")
    unet_cfg["sample_size"] = resolution // 8
    UNet2DConditionModel.from_config(unet_cfg).save_pretrained(folder / "unet")
    AutoencoderKL.from_config(AutoencoderKL.load_config(sd / "vae")).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig.from_pretrained(sd / "text_encoder")).save_pretrained(folder / "text_encoder")
    PNDMScheduler.from_pretrained(sd / "scheduler").save_pretrained(folder / "scheduler")
    # A real CLIP BPE tokenizer (no download possible here): our generated vocabulary, max length 77.
    write_tokenizer(["class", "order", "family", "genus", "specific", "epithet", "none"], folder / "tokenizer", 77)


def make_shards(work: Path, resolution: int, n: int = 64) -> Path:
    """A few synthetic animals as shards at ``resolution`` (the same writer the shard stage uses)."""
    import webdataset as wds

    world = synthetic.build_world(0, 3, (2, 8))
    out = work / "shards" / "train"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(out / "shard-000000.tar")) as sink:
        for i in range(n):
            taxon = world.species[i % len(world.species)]
            img = animals.render(taxon.traits, rng, size=resolution)
            meta = {"lineage": taxon.lineage, "row": i, "path": f"{i}.png"}
            sink.write({"__key__": f"{i:09d}", "png": img, "json": meta})
    index = {"levels": synthetic.LEVELS, "resolution": resolution,
             "train": {"shards": ["train/shard-000000.tar"], "count": n}, "test": {"shards": [], "count": 0}}
    (work / "shards" / "index.json").write_text(json.dumps(index))
    return work / "shards"


def reference_loop(params, base, lineages, images, steps: int, batch: int) -> float:
    """The official code's step: tokenize + encode L texts per sample and VAE-encode the images, every step; on
    the device ``base`` is on (the trainer's: the GPU when there is one)."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    levels = params.level_names
    device = base.unet.device
    torch.manual_seed(0)
    cond = TaxonomyConditioner(ConditionerConfig(levels, base.text_hidden, 2, 8, 2048, 0.1)).to(device)
    add_lora(base.unet, 4, 4)
    base.unet.to(device)  # the LoRA layers too
    cond.requires_grad_(False)
    cond.encoders[0].requires_grad_(True)
    trainable = lora_parameters(base.unet) + list(cond.encoders[0].parameters())
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    sched = DDPMScheduler.from_config({k: v for k, v in base.scheduler_config.items() if k != "_class_name"})
    times = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        idx = [(step * batch + j) % len(images) for j in range(batch)]
        x = (torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1).to(device)
        with torch.no_grad():
            latents = base.vae.encode(x).latent_dist.sample() * base.scaling_factor
            texts = [t for i in idx for t in lineage_texts(levels, lineages[i], species_text="as_written")]
            ids = base.tokenizer(texts, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids.to(device)
            hidden = base.text_encoder(ids)[0].view(batch, len(levels), 77, -1)
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,), device=device)
        noisy = sched.add_noise(latents, noise, t)
        pred = base.unet(noisy, t, cond(hidden, 0)).sample
        loss = F.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step > 0:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    return batch / float(np.mean(times))


def bench_a(resolution: int, batch: int, steps: int) -> dict:
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        t0 = time.perf_counter()
        build_random_sd15(work / "sd15", resolution)
        shards = make_shards(work, resolution)
        data = read_params_dict(REPO / "params.yaml")
        data["model"].update(preset="sd15", pretrained=str(work / "sd15"), cache_latents=True, cond_layers=2,
                             cond_heads=8, cond_ff=2048)
        data["train"].update(steps=steps + 1, batch_size=batch)
        # the run settings (checkpoints, logging) live in `compute` where params.yaml has that section
        data["compute" if isinstance(data.get("compute"), dict) else "train"].update(checkpoint_every=0, log_every=1)
        params = params_from_dict(data)
        prepare_base(params.model, work / "models1" / "base", shards, work / "latents", resolution=resolution)
        print(f"setup (random SD1.5 at {resolution}px, latent cache) {time.perf_counter() - t0:.1f}s", flush=True)
        # Steady state, as the reference loop: the loop time of a 1-step run is subtracted from that of a
        # (steps+1)-step run, so the first step (allocator warm-up, first text-cache fills) is left out of both.
        loops = {}
        for n in (1, steps + 1):
            cfg = section_from_dict("train", {**data["train"], "steps": n})
            paths = TrainPaths(parent=None, out=work / f"models{n}" / "class", shards=shards,
                               latents=work / "latents", scratch=work / f"scratch{n}", log_dir=work / f"log{n}")
            spec = progressive_spec(cfg, params.level_names, "class")
            extra = {"compute": params.compute} if "compute" in inspect.signature(train).parameters else {}
            summary = train(cfg, spec, params.experiment, paths, preview=None, **extra)  # the loop alone
            loops[n] = summary["seconds_this_run"]
            print(f"trainer: {n} steps, loop {loops[n]:.1f}s", flush=True)
        ours = steps * batch / (loops[steps + 1] - loops[1])
        images, lineages = load_split_arrays(shards, "train")
        base = load_base(params.model, device=default_device())  # the trainer's device (accelerate: the GPU if any)
        base.unet.train()
        ref = reference_loop(params, base, lineages, images, steps, batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"resolution": resolution, "batch": batch, "steps": steps, "trainer_samples_per_s": round(ours, 3),
            "trainer_incl_first_step_samples_per_s": round((steps + 1) * batch / loops[steps + 1], 3),
            "reference_samples_per_s": round(ref, 3), "ratio": round(ours / ref, 2), "goal": ">= 1.3"}


def bench_b() -> dict:
    torch.set_num_threads(2)
    base = load_base(section_from_dict("model", {**read_params_dict(REPO / "params.yaml")["model"],
                                                 "pretrained": str(REPO / "assets" / "tiny-base")}))
    add_lora(base.unet, 4, 4)
    cond = TaxonomyConditioner(ConditionerConfig(list("abcde"), 64, 2, 4, 256, 0.1))
    spec = TrainSpec(name="class", parent=None, cut_off=0, train_levels=(0,), train_lora=True, full_unet=False,
                     random_cut_off=False, prompt_only=False, lr=1e-3, steps=1)
    configure_trainable(base.unet, cond, spec)
    model = TrainModel(base.unet, cond)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    times = []
    for i in range(6):
        t0 = time.perf_counter()
        out = model(torch.randn(32, 12, 16, 16), torch.randint(0, 1000, (32,)), torch.randn(32, 1, 32, 64), 0)
        out.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        if i:
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    model.eval()
    # The sampler core: 64 images in one batch (128 UNet rows per step while guided), PNDM 250 steps, scale 6.
    prepare_unet_for_sampling(base.unet)
    ctx = torch.randn(64, 32, 64)
    t0 = time.perf_counter()
    sample(base.unet, make_scheduler("pndm", base.scheduler_config), ctx, ctx.flip(0), list(range(64)), (12, 16, 16),
           250, 6.0)
    sample_s = time.perf_counter() - t0
    stage_s = _generate_stage_64x250()
    return {"train_step_b32_s": round(step_s, 3), "goal_step": "<= 0.35",
            "sample_64_images_250_steps_s": round(sample_s, 1),
            "generate_stage_64_images_250_steps_s": round(stage_s, 1), "goal_sample": "<= 90"}


def _generate_stage_64x250() -> float:
    """The same 64 images through the ``generate`` stage end to end (load, plan, fixed-row UNet chunks,
    PNG writes, manifest): 16 taxa x 4 images, the setup of ``bench_generate.py``."""
    spec = importlib.util.spec_from_file_location("bench_generate", REPO / "benchmarks" / "bench_generate.py")
    bench_generate = importlib.util.module_from_spec(spec)  # the sibling benchmark script, not the package
    spec.loader.exec_module(bench_generate)

    root = Path(tempfile.mkdtemp(prefix="bench-train-gen-"))
    try:
        params = bench_generate.make_params(argparse.Namespace(steps=250, batch_size=64, images=4))
        bench_generate.setup(root, params, 16)
        return bench_generate.run_stage(root, params)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    args = ap.parse_args()
    if not args.skip_b:
        print("(b) tiny preset:", json.dumps(bench_b()), flush=True)
    if not args.skip_a:
        print(f"(a) SD1.5 architecture, random weights, {default_device()}:",
              json.dumps(bench_a(args.resolution, args.batch, args.steps)), flush=True)


if __name__ == "__main__":
    main()
