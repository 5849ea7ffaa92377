"""FLOPs for the GPU benchmark: ``torch.utils.flop_counter`` per measured call, an independent analytic count
(forward hooks: 2 x MACs of every ``Conv2d`` / ``Linear`` plus the two attention matmuls from the shapes) that the
tests hold it to, the SD1.5 figures counted on the ``meta`` device, peak bf16 throughput by GPU name and the
GPU-hour ESTIMATES of the paper's budgets (FLOPs / (utilisation x peak): not measurements).

Self-contained (no import of the other ``gpu`` modules), so tests can load it by path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

REPO = Path(__file__).resolve().parents[2]
SD15 = REPO / "assets" / "sd15"
# dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name() (first match wins)
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0))
# the paper's budgets (supplement Table S1 / S2)
PAPER_STEPS, PAPER_BATCH = 250_000, 192
FISHNET_IMAGES, FISHNET_STEPS = 16_600, 250


def _cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter has formulas for the CUDA attention kernels (flash, efficient, cudnn) but not for the CPU flash
# kernel that F.scaled_dot_product_attention dispatches to on the CPU (torch 2.14): without these, every attention
# matmul of a CPU run (the smoke mode) would count 0 (found by the analytic check, tests/test_bench_gpu.py).
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def count_flops(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), flops)``: FLOPs as ``torch.utils.flop_counter`` counts them (matmuls, convolutions,
    attention; a multiply-add is 2), plus the CPU attention kernel (:data:`CPU_ATTENTION`)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        out = fn(*args, **kwargs)
    return out, int(counter.get_total_flops())


def _conv_flops(module, inputs, output) -> int:
    kh, kw = module.kernel_size
    return 2 * output.numel() * (module.in_channels // module.groups) * kh * kw


def _linear_flops(module, inputs, output) -> int:
    return 2 * (output.numel() // module.out_features) * module.in_features * module.out_features


def _attention_flops(module, args, kwargs) -> int:
    """Q K^T and softmax(.) V of a diffusers ``Attention``: 2 x 2 x B x N x M x inner."""
    hidden = args[0] if args else kwargs["hidden_states"]
    context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
    batch = hidden.shape[0]
    n = hidden.shape[1] if hidden.ndim == 3 else hidden.shape[2] * hidden.shape[3]
    m = n if context is None else context.shape[1]
    return 4 * batch * n * m * module.to_q.out_features


def analytic_flops(model: torch.nn.Module, fn, *args, **kwargs) -> int:
    """The forward FLOPs of ``fn(*args, **kwargs)`` (which runs ``model``) counted from module shapes alone: every
    ``Conv2d`` and ``Linear`` (2 x MACs, bias not counted) and every diffusers ``Attention``'s two matmuls. An
    independent check of :func:`count_flops` (elementwise ops, norms and softmax are left out by both)."""
    from diffusers.models.attention_processor import Attention

    counts: list[int] = []
    hooks = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(lambda m, i, o: counts.append(_conv_flops(m, i, o))))
        elif isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(lambda m, i, o: counts.append(_linear_flops(m, i, o))))
        elif isinstance(module, Attention):
            hooks.append(module.register_forward_pre_hook(lambda m, a, k: counts.append(_attention_flops(m, a, k)),
                                                          with_kwargs=True))
    try:
        with torch.no_grad():
            fn(*args, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(counts)


def _meta_unet(lora: bool):
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15 / "unet"))
    unet.requires_grad_(False)
    if lora:  # the project's LoRA (taxadiffusion.models.lora): rank 4 on to_q/k/v/out.0
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    return unet


def _train_flops(unet, context_grad: bool) -> int:
    """Forward + backward of one sample (64 x 64 x 4 latents, a 77 x 768 context) with the UNet's own weights
    frozen: gradients reach the LoRA (when it has one) and, with ``context_grad``, the context (a condition
    module's output)."""
    x = torch.randn(1, 4, 64, 64, device="meta")
    ctx = torch.randn(1, 77, 768, device="meta", requires_grad=context_grad)
    t = torch.tensor([500], device="meta")
    return count_flops(lambda: unet(x, t, ctx).sample.float().square().mean().backward())[1]


def sd15_figures() -> dict[str, float]:
    """GFLOP per image / sample of SD1.5 (assets/sd15 configs) at 512 px, counted on the ``meta`` device."""
    from diffusers import AutoencoderKL

    unet = _meta_unet(lora=False)
    x, t = torch.randn(1, 4, 64, 64, device="meta"), torch.tensor([500], device="meta")
    ctx = torch.randn(1, 77, 768, device="meta")
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15 / "vae"))
    image = torch.randn(1, 3, 512, 512, device="meta")
    return {
        "unet_forward": count_flops(lambda: unet(x, t, ctx))[1] / 1e9,
        "train_frozen_unet": _train_flops(unet, context_grad=True) / 1e9,  # level >= 1: only module k trains
        "train_lora": _train_flops(_meta_unet(lora=True), context_grad=True) / 1e9,  # level 0: LoRA + module 0
        "vae_encode": count_flops(lambda: vae.encode(image))[1] / 1e9,
        "vae_decode": count_flops(lambda: vae.decode(x))[1] / 1e9,
    }


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """Dense bf16 peak of ``device`` in TFLOP/s: ``override`` when given, else from the table by GPU name (None:
    unknown, e.g. a CPU)."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def cost_estimates(fig: dict[str, float], peak_tflops_: float = 989.0, utilisation: float = 0.4) -> list[tuple]:
    """ESTIMATED GPU-hours at ``utilisation`` of ``peak_tflops_`` (from FLOPs, not measured): one level of the
    paper's training (250K steps x batch 192; level 0 also trains the LoRA) and Table S2's FishNet generation
    (16,600 images x 250 PNDM steps x 2 UNet rows + one VAE decode each). Rows ``(what, PFLOP, GPU-hours)``."""
    rate = utilisation * peak_tflops_ * 1e12
    samples = PAPER_STEPS * PAPER_BATCH
    rows = [
        ("train level 0 (LoRA + module 0)", samples * fig["train_lora"] * 1e9),
        ("train one level >= 1 (module k only)", samples * fig["train_frozen_unet"] * 1e9),
        ("FishNet generation (Table S2)",
         FISHNET_IMAGES * (FISHNET_STEPS * 2 * fig["unet_forward"] + fig["vae_decode"]) * 1e9),
    ]
    return [(what, flops / 1e15, flops / rate / 3600) for what, flops in rows]
