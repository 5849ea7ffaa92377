"""GPU benchmark: SD1.5 (configs in assets/sd15, random weights, 512 px, bf16) on one GPU, one table.

(a) training samples/s and MFU at level 0 (LoRA + condition module 0) and a later level (module k only): the
    project's step (``build_run`` + ``train_step``) vs a diffusers-style reference step (bf16 frozen UNet, fp32
    peft LoRA, fused AdamW), same work, batch, process and device;
(b) generation images/s: the project's sampler vs stock ``StableDiffusionPipeline`` with the LoRA fused (same
    contexts, PNDM steps, dtype, batch; 2 UNet rows per image on both);
(c) the sampler's UNet forward alone: fraction of bf16 peak at batch 8, 32, 128;
(d) the ``base`` stage's VAE encode (``encode_posterior``), images/s at 512 px, bf16 and fp32.
FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one call of each measured kind; MFU = FLOP/s / peak (peak
by GPU name: H100 / H200 989, A100 312 TFLOP/s dense bf16; ``--peak-tflops`` overrides). Also prints SD1.5's FLOP
figures counted on the meta device and the paper's GPU-hour ESTIMATES from them (not measurements).

    python benchmarks/bench_gpu.py                 # one H100: planned for < 8 min (not yet run on a GPU)
    python benchmarks/bench_gpu.py --smoke         # CPU, the tests' miniature SD1.5 at 32 px: not a GPU figure
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from gpu import flops  # noqa: E402
from gpu.gen_side import encode_rates, pipeline_rate, project_sampler, sampler_rate, unet_rates  # noqa: E402
from gpu.train_side import Rate, release, train_rows  # noqa: E402
from gpu.world import build_world  # noqa: E402

from taxadiffusion.core import device as device_rules  # noqa: E402

# (GPU, --smoke): batch, steps, warm-up and timed calls of each section
DEFAULTS = {
    False: {"train_batch": 16, "gen_batch": 16, "gen_steps": 25, "encode_batch": 8, "warmup": 2, "iters": 4},
    True: {"train_batch": 2, "gen_batch": 2, "gen_steps": 2, "encode_batch": 2, "warmup": 1, "iters": 1},
}


def parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, the tests' miniature SD1.5 (seconds; no GPU figure)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: by GPU name)")
    ap.add_argument("--level", type=int, default=None, help="the later level k >= 1 of (a) (default: the last)")
    ap.add_argument("--unet-batches", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                    help="training / encode dtype: auto = bf16 on the GPU, fp32 in the smoke (sampling on a CPU: fp32)")
    for key in DEFAULTS[False]:
        ap.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help="keep the model and data here (default: a temp dir)")
    args = ap.parse_args(argv)
    for key, value in DEFAULTS[args.smoke].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _mfu(rate: Rate | None, peak: float | None) -> str:
    if rate is None or not peak:
        return "n/a"
    percent = 100 * rate.per_s * rate.gflop_per_item / (peak * 1e3)
    return f"{percent:.1f}%" if percent >= 1 else f"{percent:.2g}%"


def print_table(rows: list[tuple], peak: float | None) -> None:
    """One line per row: ``(label, ours, reference or None)``."""
    head = ("row", "ours", "reference", "ours/ref", "GFLOP/item ours / ref", "MFU ours", "MFU ref")
    lines = [head]
    for label, ours, ref in rows:
        lines.append((label, f"{ours.per_s:.3f}", f"{ref.per_s:.3f}" if ref else "-",
                      f"{ours.per_s / ref.per_s:.2f}x" if ref else "-",
                      f"{ours.gflop_per_item:.4g} / {ref.gflop_per_item:.4g}" if ref else f"{ours.gflop_per_item:.4g}",
                      _mfu(ours, peak), _mfu(ref, peak)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for n, line in enumerate(lines):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def print_flops(peak_for_estimate: float = 989.0) -> None:
    """SD1.5's FLOP figures (meta device, assets/sd15) and the paper's GPU-hour ESTIMATES at 40% of H100 peak."""
    fig = flops.sd15_figures()
    print("\nSD1.5 FLOP figures (torch.utils.flop_counter on the meta device, assets/sd15 configs, 512 px):")
    for key, label in (("unet_forward", "UNet forward, per image (64x64x4 latents, 77x768 context)"),
                       ("train_frozen_unet", "forward + backward, UNet frozen (grad to the context), per sample"),
                       ("train_lora", "forward + backward, UNet frozen + rank-4 LoRA trained, per sample"),
                       ("vae_encode", "VAE encode, per 512 px image"), ("vae_decode", "VAE decode, per 512 px image")):
        print(f"  {label}: {fig[key]:,.1f} GFLOP")
    print(f"ESTIMATE (from FLOPs, not measured): GPU-hours at 40% of {peak_for_estimate:g} TFLOP/s (H100 bf16 dense);"
          " condition modules and optimiser left out (< 0.1%):")
    for what, pflop, hours in flops.cost_estimates(fig, peak_for_estimate, 0.4):
        print(f"  {what}: {pflop:,.0f} PFLOP -> {hours:,.1f} GPU-hours")


def measure(world, args) -> list[tuple]:
    levels = world.params.level_names
    k = args.level if args.level is not None else len(levels) - 1
    rows = [(label, ours, ref) for label, (ours, ref) in train_rows(world, k, args.warmup, args.iters).items()]
    sampler = project_sampler(world, k)
    w, n = max(1, args.warmup // 2), max(1, args.iters // 2)  # whole sampling runs: fewer calls
    ours = sampler_rate(world, sampler, args.gen_batch, w, n)
    ref = pipeline_rate(world, sampler, k, args.gen_batch, w, n)
    release()
    rows.append((f"(b) generate, {args.gen_steps} PNDM steps, batch {args.gen_batch}, images/s", ours, ref))
    for batch, rate in unet_rates(world, sampler, args.unet_batches, args.warmup, args.iters).items():
        rows.append((f"(c) UNet forward (sampler's UNet), batch {batch}, images/s", rate, None))
    for dtype, rate in encode_rates(world, sampler, args.encode_batch, args.warmup, args.iters).items():
        rows.append((f"(d) base encode (VAE {dtype}), batch {args.encode_batch}, images/s", rate, None))
    del sampler
    release()
    return rows


def quiet() -> None:
    """No weight-loading bars or dtype-cast notices between the rows (errors still print)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def main(argv=None) -> int:
    args = parse(argv)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench_gpu.py: no CUDA device; run with --smoke for the CPU check (no GPU figures)")
    if args.smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    quiet()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    try:
        world = build_world(work, args.smoke, (args.train_batch, args.gen_batch), args.gen_steps, args.dtype)
        # the process-wide matmul settings training/train.py sets (TF32 on NVIDIA GPUs), for both sides alike
        getattr(device_rules, "fast_matmuls", lambda device: None)(world.device)
        peak = flops.peak_tflops(world.device, args.peak_tflops)
        name = torch.cuda.get_device_name(world.device) if world.device.type == "cuda" else "CPU"
        rows = measure(world, args)
        print(f"\n{'CPU SMOKE (miniature SD1.5; not a GPU figure)' if args.smoke else 'GPU'}: {name}, "
              f"{str(world.dtype).removeprefix('torch.')}{' (sampling: fp32 on a CPU)' if args.smoke else ''}, "
              f"{world.resolution} px, peak "
              f"{f'{peak:g} TFLOP/s' if peak else 'unknown'}, warm-up {args.warmup} + {args.iters} timed calls")
        print_table(rows, peak)
        print_flops()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
