"""Sampling with a trained level: load it for sampling, run the UNet on fixed shapes, draw lineages.

Reproducibility: image ``i`` of a taxon starts from noise seeded by ``plan.image_seed`` (seed, lineage, i),
and every network call that touches it has the same shape whatever the batch: CPU kernels (oneDNN 1x1
convolutions, small-M GEMMs such as the time embedding) pick their algorithm by shape, and different
algorithms round differently (measured: up to 8e-5 in the latents after 10 PNDM steps between batch 1 and
7, enough to change PNG bytes); cuBLAS/cuDNN also choose kernels by shape (not measured here). So the UNet
always runs on fixed chunks of ``UNET_ROWS`` rows (padded), the text encoder and condition module on one
string / one taxon at a time, and the VAE on fixed chunks. Rows of a fixed-shape call were measured to be
independent of their position and neighbours. Pixels then depend on (seed, lineage, index, settings,
device type, CPU thread count), not on batch size, process count or resume point.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import SafetensorError, safe_open

from taxadiffusion.config import ModelConfig, SamplingConfig
from taxadiffusion.core.device import resolve_device
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.lineage import lineage_key
from taxadiffusion.models.base import move
from taxadiffusion.models.conditioner import level_text, lineage_texts
from taxadiffusion.models.level import LevelConfig
from taxadiffusion.models.lora import LORA_FILE
from taxadiffusion.models.taxa import TaxaModel, load_taxa_model
from taxadiffusion.sampling.denoise import make_scheduler, sample, to_uint8

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # config.DTYPE_NAMES
# Rows per UNet call (one image = 2 rows while guided). Fixed per device type, never derived from
# batch_size: it is what makes pixels independent of the batch (module docstring), and part of generate's
# settings.json (a new value redraws every image). CPU: 64 rows (the default batch of 64 guided images is 2 full
# chunks); measured on 2 idle cores, the tiny UNet costs ~3.6 / 3.2 / 3.0 ms per row at 16 / 32 / 64 rows per
# call and the stage ran 13% faster at 64 than 16 (benchmarks/README.md); re-measured 2026-12-06 as CPU time on
# one thread (the machine shared): 4.5 / 4.1 / 4.2 / 4.3 / 5.5 ms per row at 16 / 32 / 64 / 128 / 256 rows, a
# plateau from 32 to 128. GPU: 32 rows. An SD1.5 row (64x64 latents) is 0.80 TFLOP (torch flop_counter), so a
# call is ~26 TFLOP, ~50 ms on an H100 at half its bf16 peak: far longer than launching the UNet's ~1000 kernels
# (~5 ms), and its first GEMMs have 32 x 4096 token rows, well past where tensor cores saturate; more rows
# gain nothing. Memory: ~50 MB of live activations per row in bf16 with SDPA attention (the 12 skip tensors,
# the 64x64 blocks' 320-1280 channel tensors), ~2 GB per call, beside ~1.7 GB of weights.
UNET_ROWS = {"cpu": 64, "cuda": 32}
# Images per VAE decode call. CPU: 4 (part of the embedded default's settings.json). GPU: 16. A 512 px decode is
# 2.5 TFLOP an image (its last blocks run 128-256 channel 3x3 convolutions at 512x512), so 16 images are ~40 TFLOP,
# ~0.1 s on an H100, and at ~1 GB of live activations an image in half precision (64-128 MiB tensors at 512x512)
# ~16 GB, beside the UNet; 4 calls instead of 16 for a batch of 64 images.
DECODE_ROWS = 4  # the CPU's value, also what figures use
DECODE_ROWS_BY_DEVICE = {"cpu": DECODE_ROWS, "cuda": 16}


def unet_rows(device: torch.device) -> int:
    return UNET_ROWS.get(device.type, 32)


def decode_rows(device: torch.device) -> int:
    return DECODE_ROWS_BY_DEVICE.get(device.type, DECODE_ROWS_BY_DEVICE["cuda"])


# --------------------------------------------------------------------------------------------------
# Fixed-shape calls


def fixed_rows(fn: Callable[..., torch.Tensor], rows: int, *tensors: torch.Tensor) -> torch.Tensor:
    """``fn`` over the first dim of ``tensors`` in chunks of exactly ``rows`` (the last one padded by
    repeating its last row), so each row's result does not depend on how many rows came with it."""
    n = tensors[0].shape[0]
    pad = (-n) % rows
    if pad:
        tensors = tuple(torch.cat([x, x[-1:].expand(pad, *x.shape[1:])]) for x in tensors)
    outs = [fn(*(x[s : s + rows] for x in tensors)) for s in range(0, n + pad, rows)]
    return torch.cat(outs)[:n]


class FixedRowsUNet:
    """A UNet wrapper for ``sampling.sample``: same call surface, fixed-shape calls underneath."""

    def __init__(self, unet, rows: int):
        self.unet, self.rows = unet, int(rows)
        self.calls = 0  # UNet forward calls (tests, benchmarks)

    def __call__(self, latents, t, context):
        def run(x, c):
            self.calls += 1
            return self.unet(x.contiguous(memory_format=torch.channels_last), t, c).sample

        return SimpleNamespace(sample=fixed_rows(run, self.rows, latents, context))


# --------------------------------------------------------------------------------------------------
# Loading a trained level for sampling


def compute_dtype(sampling: SamplingConfig, device: torch.device) -> torch.dtype:
    """``generate.dtype`` on GPUs; CPUs sample in fp32 (bf16 matmuls there are slower and lossy)."""
    if device.type == "cpu":
        if sampling.dtype != "fp32":
            log.info("generate.dtype=%s applies to GPUs; sampling on CPU in fp32", sampling.dtype)
        return torch.float32
    return DTYPES[sampling.dtype]


def check_level_files(model_dir: str | Path, config: LevelConfig) -> None:
    """The files ``config`` says the folder holds are there, and every ``*.safetensors`` opens and covers
    its header's tensors: a missing, truncated or damaged file is a one-line error naming it (before
    anything is loaded, or any earlier output is removed), not a traceback from inside a loader."""
    model_dir = Path(model_dir)
    needed = []
    if config.has_condition_module:
        needed += ["condition.safetensors", "condition_config.json"]
    if config.has_lora:
        needed.append(LORA_FILE)
    if config.full_unet:
        needed.append("unet/config.json")
    for name in needed:
        if not (model_dir / name).is_file():
            raise UserError(f"{model_dir / name}: missing from the trained level {model_dir} (its "
                            "train_config.json says it has one); rebuild it (dvc repro) or restore the folder")
    for path in sorted(model_dir.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise UserError(f"{path}: unreadable weights ({exc}); rebuild it (dvc repro) or restore the "
                            "folder") from None


def prepare_unet_for_sampling(unet) -> None:
    """Fold the LoRA into the attention weights (W + s*B@A, as diffusers' ``fuse_lora``) and use
    channels-last convolutions: measured 25-35% less UNet time on CPU (benchmarks/README.md)."""
    for module in unet.modules():
        if isinstance(module, BaseTunerLayer) and not module.merged:
            module.merge()
    unet.to(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------------
# The sampler


class NonFiniteSamples(UserError):
    """A batch came out non-finite (nan/inf): its images would be black; nothing of it is written."""


class TaxaSampler:
    """Draws images of lineages at one cut-off with a loaded :class:`TaxaModel`.

    Contexts are computed once per taxon (not per step) and kept only while the taxon is in the batch
    (mass generation visits taxa in order); every text string goes through the encoder alone, once.
    """

    def __init__(self, model: TaxaModel, sampling: SamplingConfig, cut_off: int, dtype=torch.float32,
                 rows: int | None = None, scale_param: str = "guidance_scale"):
        self.model, self.sampling, self.cut_off, self.dtype = model, sampling, int(cut_off), dtype
        self.scale_param = scale_param  # the param that set the guidance scale, named when a batch diverges
        unet = model.base.unet
        self.device = model.device
        self.unet = FixedRowsUNet(unet, rows or unet_rows(self.device))
        self.decode_rows = decode_rows(self.device)
        self.latent_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self._contexts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _key(self, lineage: dict) -> str:
        return lineage_key(lineage[lv] for lv in self.model.levels[: self.cut_off + 1])

    def _warm(self, lineage: dict) -> None:
        m = self.model
        texts = lineage_texts(m.levels, lineage, self.cut_off)[: self.cut_off + 1]
        if self.sampling.guidance == "cfg":
            texts.append("")  # sampling.py / TaxaModel.negative: vanilla CFG against the empty prompt
        elif self.cut_off == 0:
            texts.append(level_text(m.levels[0], None))  # official: raw "<level0>: None" at cut_off 0
        for text in texts:  # one string per encoder call: its embedding never depends on its neighbours
            m.cache.warm([text])

    def context(self, lineage: dict) -> tuple[torch.Tensor, torch.Tensor]:
        key = self._key(lineage)
        if key not in self._contexts:
            self._warm(lineage)
            cond = self.model.condition([lineage], self.cut_off)
            neg = self.model.negative([lineage], self.cut_off, self.sampling.guidance)
            self._contexts[key] = (cond, neg)
        return self._contexts[key]

    @torch.no_grad()
    def draw(self, lineages: Sequence[dict], seeds: Sequence[int], progress: Callable[[float], None] | None = None):
        """uint8 ``[B, H, W, 3]`` images, one per (lineage, seed); ``progress(images)`` after every step
        (fractions of the batch, so a bar moves and estimates its ETA within long batches)."""
        keep = {}
        pairs = []
        for lin in lineages:
            pair = self.context(lin)
            keep[self._key(lin)] = pair
            pairs.append(pair)
        self._contexts = keep  # taxa are visited in order: drop the ones that left the batch
        cond = torch.cat([c for c, _ in pairs])
        neg = torch.cat([n for _, n in pairs])
        s = self.sampling
        scheduler = make_scheduler(s.sampler, self.model.base.scheduler_config)
        on_step = None
        if progress is not None:
            scheduler.set_timesteps(s.steps)  # PNDM runs steps + 1 evaluations: count the real ones
            share = len(lineages) / len(scheduler.timesteps)

            def on_step() -> None:
                progress(share)

        latents = sample(self.unet, scheduler, cond, neg, list(seeds), self.latent_shape, s.steps, s.scale,
                         s.guidance_range, dtype=self.dtype, on_step=on_step)
        self.check_finite("latents", latents, lineages)
        images = fixed_rows(self.model.base.decode_latents, self.decode_rows, latents)
        self.check_finite("decoded images", images, lineages)
        return to_uint8(images)

    def check_finite(self, what: str, batch: torch.Tensor, lineages: Sequence[dict]) -> None:
        """A nan/inf anywhere in ``batch`` is a one-line error naming the taxa and the likely cause: to_uint8 would
        turn it into black pixels written with exit status 0. One reduction per batch: measured on one shared CPU
        thread, 0.5 ms for 64 tiny latents or images, 1.2 ms for 32 SD1.5 latents, 0.12 s for their 512 px images,
        against seconds (tiny) to minutes (SD1.5) of denoising per batch."""
        if bool(torch.isfinite(batch).all()):
            return
        taxa = list(dict.fromkeys(self._key(lin) for lin in lineages))
        shown = ", ".join(taxa[:3]) + (f" (+{len(taxa) - 3} more)" if len(taxa) > 3 else "")
        dtype = next((name for name, dt in DTYPES.items() if dt == self.dtype), str(self.dtype))
        scale = f"{self.scale_param}={self.sampling.scale:g} too large for this model"
        half = f"generate.dtype={dtype} overflowing (try fp32)" if dtype != "fp32" else None
        if what == "latents":
            causes = [scale, half]
        else:  # finite latents the decoder could not take
            causes = [f"{half} in the VAE decoder" if half else f"the VAE decoder overflowing ({scale}?)"]
        cause = " or ".join(c for c in causes if c)
        raise NonFiniteSamples(f"non-finite {what} (nan/inf) drawing {len(lineages)} image(s) of {shown}; likely "
                               f"cause: {cause}; nothing of this batch is written")


def load_sampler(model_dir: str | Path, model_cfg: ModelConfig, sampling: SamplingConfig, cut_off: int,
                 device=None, scale_param: str = "guidance_scale") -> TaxaSampler:
    """The level in ``model_dir`` (weights checked first), LoRA merged, ready to draw at ``cut_off``."""
    device = resolve_device(device)
    dtype = compute_dtype(sampling, device)
    check_level_files(model_dir, LevelConfig.load(model_dir))
    model = load_taxa_model(model_dir, model_cfg, device=device, dtype=dtype)
    # the VAE decodes in the compute dtype too, as diffusers pipelines do (fp32 on the CPU: nothing changes there)
    move(model.base.vae, device, dtype)
    prepare_unet_for_sampling(model.base.unet)
    return TaxaSampler(model, sampling, cut_off, dtype, scale_param=scale_param)
