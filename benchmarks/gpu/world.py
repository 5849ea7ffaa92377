"""The benchmark's model, data and settings: SD1.5 from ``assets/sd15`` with random weights at 512 px (or, with
``--smoke``, the tests' miniature SD1.5 of ``tests/helpers/sd15.py`` at 32 px), a few synthetic training images
as shards, their latents cached by the project's ``base`` stage, and the params of both; plus the timer."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import bench_train  # the sibling benchmark: build_random_sd15, make_shards
import torch

from taxadiffusion.config import Params, params_from_dict, read_params_dict
from taxadiffusion.training.base import prepare_base

REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    """Where the benchmark's model and data are, and its settings."""

    work: Path
    model_dir: Path  # a diffusers folder (unet/ vae/ text_encoder/ tokenizer/ scheduler/)
    shards: Path
    latents: Path
    params: Params
    device: torch.device
    dtype: torch.dtype  # training / encode compute dtype (sampling: the sampler's own, fp32 on a CPU)
    resolution: int
    smoke: bool


def _mini_sd15(folder: Path) -> int:
    spec = importlib.util.spec_from_file_location("helpers_sd15", REPO / "tests" / "helpers" / "sd15.py")
    sd15 = importlib.util.module_from_spec(spec)  # the tests' builder, not a package module
    spec.loader.exec_module(sd15)
    sd15.make_mini_sd15(folder)
    return sd15.RESOLUTION


def set_train(data: dict, batch: int, mixed_precision: str) -> None:
    """The train settings of both sides: one process, ``batch`` samples per optimiser step, no gradient
    accumulation, no checkpoints (the run settings live in ``compute`` when params.yaml has that section)."""
    data["train"].update(batch_size=batch, mixed_precision=mixed_precision, steps=10**6)
    run = {"checkpoint_every": 0, "gradient_checkpointing": False, "log_every": 10**6, "num_workers": 0}
    if isinstance(data.get("compute"), dict):
        data["compute"].update(run, micro_batch=0, processes=1, compile=False)
    else:
        data["train"].update(run)


def make_params(model_dir: Path, resolution: int, batch: int, steps: int, smoke: bool, bf16: bool) -> Params:
    """params.yaml on the benchmark's model: the sd15 preset, the paper's condition module (2 layers, 8 heads,
    ff 2048; 4 heads, ff 64 on the miniature's 64-wide text encoder), bf16 on the GPU, PNDM, TaxaGuide 6."""
    data = read_params_dict(REPO / "params.yaml")
    data.update(seed=0, num_inference_steps=steps, guidance_scale=6.0)
    data["model"].update(preset="sd15", pretrained=str(model_dir), cache_latents=True, cond_layers=2,
                         cond_heads=4 if smoke else 8, cond_ff=64 if smoke else 2048)
    data["dataset"]["resolution"] = resolution
    set_train(data, batch, "bf16" if bf16 else "no")
    data["generate"].update(sampler="pndm", guidance="taxaguide", dtype="bf16" if bf16 else "fp32",
                            guidance_range=[0.0, 1.0])
    return params_from_dict(data)


def build_world(work: Path, smoke: bool, batches: tuple[int, int], steps: int, dtype: str = "auto") -> World:
    """Write the model folder, the shards and the ``base`` stage's latents under ``work`` (not timed).
    ``batches``: (training, generation) batch; ``steps``: sampling steps; ``dtype``: ``bf16`` | ``fp32`` |
    ``auto`` (bf16 on the GPU, fp32 in the CPU smoke)."""
    batch, gen_batch = batches
    device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
    bf16 = dtype == "bf16" or (dtype == "auto" and device.type == "cuda")
    t0 = time.perf_counter()
    model_dir = work / "sd15"
    if smoke:
        resolution = _mini_sd15(model_dir)
    else:
        resolution = 512
        bench_train.build_random_sd15(model_dir, resolution)
    shards = bench_train.make_shards(work, resolution, n=max(2 * batch, gen_batch, 16))
    params = make_params(model_dir, resolution, batch, steps, smoke, bf16)
    prepare_base(params.model, work / "base", shards, work / "latents", resolution=resolution, device=str(device))
    print(f"setup: {'miniature' if smoke else 'random-weight'} SD1.5 at {resolution} px, {device}, "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    compute = torch.bfloat16 if bf16 else torch.float32
    return World(work, model_dir, shards, work / "latents", params, device, compute, resolution, smoke)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, iters: int) -> float:
    """Seconds per call of ``fn()`` after ``warmup`` calls (CUDA events on a GPU, synchronised before and
    after)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters
