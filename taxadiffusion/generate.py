"""Sampling with a trained TaxaDiffusion level: mass generation (the ``generate`` stage) and a grid CLI.

Mass generation (docs/architecture.md ``generate``): the Table S2 plan (``plan.py``) is expanded to one row
per image; each process (``accelerate launch`` on GPUs, ``torchrun`` on CPU; ``accelerate.PartialState``)
takes every ``world_size``-th pending image, draws batches that mix taxa, and writes lossless PNGs by temp
name + rename. An image whose PNG exists is never drawn again, so a killed run resumes where it stopped.
Rank 0 writes ``manifest.csv`` after a barrier.

Reproducibility: image ``i`` of a taxon starts from noise seeded by ``plan.image_seed`` (generate.seed,
lineage, i), and every network call that touches it has the same shape whatever the batch: CPU kernels
(oneDNN 1x1 convolutions, small-M GEMMs such as the time embedding) pick their algorithm by shape, and
different algorithms round differently (measured: up to 8e-5 in the latents after 10 PNDM steps between
batch 1 and 7, enough to change PNG bytes); cuBLAS/cuDNN also choose kernels by shape (not measured
here). So the UNet always runs on fixed chunks of ``UNET_ROWS`` rows (padded), the text encoder and
condition module on one string / one taxon at a time, and the VAE on fixed chunks. Rows of a fixed-shape
call were measured to be independent of their position and neighbours. Pixels then
depend on (seed, lineage, index, settings, device type, CPU thread count), not on batch size, process
count or resume point.

Person-facing CLI::

    python -m taxadiffusion.generate --lineage "Class/Order/Family/Genus/Genus epithet" -n 8 --out grid.png

A lineage may stop early (3 names = family, cut_off 2); a name not in the trained taxonomy is a one-line
error with the closest known names.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import logging
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import pandas as pd
import torch

from .config import Params, load_params
from .errors import UserError
from .io import atomic_path, read_json, write_json, write_text
from .plan import NONE, image_seed, lineage_key, make_plan, plan_images, read_test_table

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Rows per UNet call (one image = 2 rows while guided). Fixed per device type, never derived from
# batch_size: it is what makes pixels independent of the batch (module docstring). CPU: 64 rows (the
# default batch of 64 guided images is 2 full chunks); measured on 2 idle cores, the tiny UNet costs
# ~3.6 / 3.2 / 3.0 ms per row at 16 / 32 / 64 rows per call and the stage ran 13% faster at 64 than 16
# (benchmarks/README.md). GPU: 32 rows of SD1.5 64x64 latents nearly fill an H100.
UNET_ROWS = {"cpu": 64, "cuda": 32}
DECODE_ROWS = 4
SETTINGS_FILE = "settings.json"
_IMAGE_NAME = re.compile(r"^\d{4,}\.png$")


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
        self.after_step: Callable[[], None] | None = None  # progress hook, once per denoising step

    def __call__(self, latents, t, context):
        def run(x, c):
            self.calls += 1
            return self.unet(x.contiguous(memory_format=torch.channels_last), t, c).sample

        out = fixed_rows(run, self.rows, latents, context)
        if self.after_step is not None:
            self.after_step()
        return SimpleNamespace(sample=out)


# --------------------------------------------------------------------------------------------------
# Settings and the sampler


@dataclass(frozen=True)
class SamplingSettings:
    sampler: str
    steps: int
    scale: float
    guidance: str
    guidance_range: tuple
    dtype: str

    @classmethod
    def from_params(cls, params: Params, steps: int | None = None, scale: float | None = None):
        from .sampling import SAMPLERS

        g = params.generate
        steps = int(params.num_inference_steps if steps is None else steps)
        scale = float(params.guidance_scale if scale is None else scale)
        if g.sampler not in SAMPLERS:
            raise UserError(f"generate.sampler={g.sampler!r}: expected one of {', '.join(SAMPLERS)}")
        if g.guidance not in ("taxaguide", "cfg"):
            raise UserError(f"generate.guidance={g.guidance!r}: expected 'taxaguide' or 'cfg'")
        if g.dtype not in DTYPES:
            raise UserError(f"generate.dtype={g.dtype!r}: expected one of {', '.join(DTYPES)}")
        if steps < 1:
            raise UserError(f"num_inference_steps={steps}: must be >= 1")
        rng = list(g.guidance_range or [])
        if len(rng) != 2 or not 0.0 <= float(rng[0]) <= float(rng[1]) <= 1.0:
            raise UserError(f"generate.guidance_range={g.guidance_range!r}: expected [lo, hi] with 0 <= lo <= hi <= 1")
        return cls(g.sampler, steps, scale, g.guidance, (float(rng[0]), float(rng[1])), g.dtype)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def compute_dtype(settings: SamplingSettings, device: torch.device) -> torch.dtype:
    """``generate.dtype`` on GPUs; CPUs sample in fp32 (bf16 matmuls there are slower and lossy)."""
    if device.type == "cpu":
        if settings.dtype != "fp32":
            log.info("generate.dtype=%s applies to GPUs; sampling on CPU in fp32", settings.dtype)
        return torch.float32
    return DTYPES[settings.dtype]


def check_model_dir(model_dir: str | Path, levels: list[str], cut_off: int) -> dict:
    """``models/<level>/train_config.json`` exists, has our levels and was trained down to ``cut_off``."""
    path = Path(model_dir) / "train_config.json"
    if not path.exists():
        raise UserError(f"{model_dir}: not a trained level (no train_config.json); run `dvc repro` first")
    config = read_json(path)
    if list(config.get("levels", [])) != list(levels):
        raise UserError(f"{path}: levels {config.get('levels')} differ from params.yaml levels {list(levels)}")
    trained = int(config.get("level_index", len(levels) - 1))
    if trained < cut_off:
        raise UserError(
            f"{model_dir}: trained down to '{levels[trained]}' only; drawing at level '{levels[cut_off]}' "
            f"needs models/{levels[cut_off]} (or a finer level)"
        )
    return config


class TaxaSampler:
    """Draws images of lineages at one cut-off with a loaded :class:`TaxaModel`.

    Contexts are computed once per taxon (not per step) and kept only while the taxon is in the batch
    (mass generation visits taxa in order); every text string goes through the encoder alone, once.
    """

    def __init__(self, model, settings: SamplingSettings, cut_off: int, dtype=torch.float32, unet_rows=None):
        self.model, self.settings, self.cut_off, self.dtype = model, settings, int(cut_off), dtype
        base = model.base
        self.device = model.device
        self.unet = FixedRowsUNet(base.unet, unet_rows or UNET_ROWS.get(self.device.type, 32))
        self.latent_shape = (base.unet.config.in_channels, base.unet.config.sample_size, base.unet.config.sample_size)
        self._contexts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _warm(self, lineage: dict) -> None:
        from .models.conditioner import lineage_texts, level_text

        m = self.model
        texts = lineage_texts(m.levels, lineage, self.cut_off)[: self.cut_off + 1]
        if self.settings.guidance == "cfg":
            texts.append("")  # sampling.py / TaxaModel.negative: vanilla CFG against the empty prompt
        elif self.cut_off == 0:
            texts.append(level_text(m.levels[0], None))  # official: raw "<level0>: None" at cut_off 0
        for text in texts:  # one string per encoder call: its embedding never depends on its neighbours
            m.cache.warm([text])

    def context(self, lineage: dict) -> tuple[torch.Tensor, torch.Tensor]:
        key = lineage_key(lineage[lv] for lv in self.model.levels[: self.cut_off + 1])
        if key not in self._contexts:
            self._warm(lineage)
            cond = self.model.condition([lineage], self.cut_off)
            neg = self.model.negative([lineage], self.cut_off, self.settings.guidance)
            self._contexts[key] = (cond, neg)
        return self._contexts[key]

    @torch.no_grad()
    def draw(self, lineages: Sequence[dict], seeds: Sequence[int], progress: Callable[[float], None] | None = None):
        """uint8 ``[B, H, W, 3]`` images, one per (lineage, seed); ``progress(images)`` after every step
        (fractions of the batch, so a bar moves and estimates its ETA within long batches)."""
        from .sampling import make_scheduler, sample, to_uint8

        keep = {}
        pairs = []
        for lin in lineages:
            pair = self.context(lin)
            keep[lineage_key(lin[lv] for lv in self.model.levels[: self.cut_off + 1])] = pair
            pairs.append(pair)
        self._contexts = keep  # taxa are visited in order: drop the ones that left the batch
        cond = torch.cat([c for c, _ in pairs])
        neg = torch.cat([n for _, n in pairs])
        s = self.settings
        scheduler = make_scheduler(s.sampler, self.model.base.scheduler_config)
        if progress is not None:
            scheduler.set_timesteps(s.steps)  # PNDM runs steps + 1 evaluations: count the real ones
            share = len(lineages) / len(scheduler.timesteps)
            self.unet.after_step = lambda: progress(share)
        try:
            latents = sample(self.unet, scheduler, cond, neg, list(seeds), self.latent_shape, s.steps, s.scale,
                             s.guidance_range, dtype=self.dtype)
        finally:
            self.unet.after_step = None
        images = fixed_rows(self.model.base.decode_latents, DECODE_ROWS, latents)
        return to_uint8(images)


def load_sampler(model_dir, params: Params, settings: SamplingSettings, cut_off: int, device) -> TaxaSampler:
    from .models.taxa import load_taxa_model

    device = resolve_device(device)
    dtype = compute_dtype(settings, device)
    model = load_taxa_model(model_dir, params.model, device=device, dtype=dtype)
    prepare_unet_for_sampling(model.base.unet)
    return TaxaSampler(model, settings, cut_off, dtype)


def prepare_unet_for_sampling(unet) -> None:
    """Fold the LoRA into the attention weights (W + s*B@A, as diffusers' ``fuse_lora``) and use
    channels-last convolutions: measured 25-35% less UNet time on CPU (benchmarks/README.md)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in unet.modules():
        if isinstance(module, BaseTunerLayer) and not module.merged:
            module.merge()
    unet.to(memory_format=torch.channels_last)


def write_png(path: Path, pixels: torch.Tensor) -> None:
    """Lossless PNG by temp name + rename: a killed run never leaves a truncated image."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(pixels.numpy()).save(tmp, format="PNG")


# --------------------------------------------------------------------------------------------------
# Mass generation


def _fingerprint(params: Params, model_dir: Path, settings: SamplingSettings, device: torch.device) -> dict:
    """Everything that changes pixels; a resumed run with a different fingerprint starts over."""
    files = {}
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in (".safetensors", ".json"):
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "settings": {**asdict(settings), "guidance_range": list(settings.guidance_range)},
        "seed": params.generate.seed,
        "levels": params.level_names,
        "target_level": params.generate.target_level,
        "base": {"preset": params.model.preset, "pretrained": params.model.pretrained,
                 "revision": params.model.revision},
        "model_files": files,
        "device_type": device.type,
        "unet_rows": UNET_ROWS.get(device.type, 32),
        "decode_rows": DECODE_ROWS,
    }


def _image_files(out: Path) -> list[Path]:
    """Images this stage may have written: ``<class>/<taxon>/<digits>.png`` under ``out``."""
    return [p for p in out.glob("*/*/*.png") if _IMAGE_NAME.match(p.name)]


def _start(out: Path, fingerprint: dict) -> int:
    """Drop temp files of a killed run; wipe images of a run with other settings. Returns images removed."""
    for tmp in out.glob("*/*/.tmp-*"):
        tmp.unlink()
    removed = 0
    settings_path = out / SETTINGS_FILE
    if settings_path.exists():
        try:
            previous = json.loads(settings_path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous != fingerprint:
            files = _image_files(out)
            changed = sorted(k for k in fingerprint if (previous or {}).get(k) != fingerprint[k])
            log.warning("generate: %s changed since the images in %s were drawn: removing %d image(s)",
                        ", ".join(changed) or SETTINGS_FILE, out, len(files))
            for path in files:
                path.unlink()
            removed = len(files)
            (out / "manifest.csv").unlink(missing_ok=True)
    write_json(settings_path, fingerprint)
    return removed


def _finish(out: Path, images: pd.DataFrame, levels: list[str], settings: SamplingSettings) -> int:
    """Write ``manifest.csv`` (all planned images must exist); remove images no longer in the plan."""
    missing = [p for p in images["path"] if not (out / p).is_file()]
    if missing:
        raise UserError(f"{out}: {len(missing)} planned image(s) missing after generation, e.g. {missing[0]}; "
                        "rerun to resume")
    manifest = images.copy()
    manifest["sampler"] = settings.sampler
    manifest["steps"] = settings.steps
    manifest["guidance"] = settings.guidance
    manifest["scale"] = settings.scale
    cols = [*levels, "taxon", "index", "path", "seed", "sampler", "steps", "guidance", "scale"]
    write_text(out / "manifest.csv", manifest[cols].to_csv(index=False))
    planned = {str(out / p) for p in images["path"]}
    stale = [p for p in _image_files(out) if str(p) not in planned]
    for path in stale:
        path.unlink()
    for folder in sorted({p.parent for p in stale} | {p.parent.parent for p in stale}, key=lambda p: -len(p.parts)):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return len(stale)


def generate(
    params: Params,
    model_dir: str | Path | None = None,
    prepared_dir: str | Path = "data/prepared",
    out_dir: str | Path | None = None,
    state=None,
) -> dict:
    """Draw every image of the plan that does not exist yet; write plan.csv and manifest.csv."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    cfg = params.generate
    levels = params.level_names
    if cfg.target_level not in levels:
        raise UserError(f"generate.target_level={cfg.target_level!r}: expected one of {levels}")
    if int(cfg.batch_size) < 1:
        raise UserError(f"generate.batch_size={cfg.batch_size}: must be >= 1")
    cut_off = levels.index(cfg.target_level)
    model_dir = Path(model_dir or f"models/{cfg.target_level}")
    out = Path(out_dir or cfg.out)
    settings = SamplingSettings.from_params(params)
    check_model_dir(model_dir, levels, cut_off)

    test = read_test_table(prepared_dir, levels)
    plan = make_plan(test, levels, cfg.target_level, cfg.max_species_per_class, cfg.images_per_species_capped,
                     cfg.images_per_species, cfg.seed, where=str(Path(prepared_dir) / "table.parquet"))
    images = plan_images(plan, levels, cfg.target_level, cfg.seed)

    # cpu=True on a CPU-only machine: otherwise torchrun/accelerate ranks run as independent single processes
    # (docs stack-notes, accelerate 1.15 on CPU)
    state = state or PartialState(cpu=not torch.cuda.is_available())
    device = state.device
    removed = 0
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "plan.csv", plan.to_csv(index=False))
        removed = _start(out, _fingerprint(params, model_dir, settings, device))
    state.wait_for_everyone()
    pending = [i for i, p in enumerate(images["path"]) if not (out / p).is_file()]
    state.wait_for_everyone()  # every rank has listed the pending images before any is written
    mine = pending[state.process_index :: state.num_processes]

    drawn = 0
    if mine:
        sampler = load_sampler(model_dir, params, settings, cut_off, device)
        bar = tqdm(total=len(mine), unit="img", desc=f"generate (rank {state.process_index}/{state.num_processes})",
                   disable=not state.is_main_process, dynamic_ncols=True,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} [{elapsed}<{remaining}, {rate_fmt}]")
        rows = images.to_dict("records")

        def advance(share: float) -> None:
            bar.update(min(share, max(0.0, bar.total - bar.n)))  # float shares must not overshoot the total

        for start in range(0, len(mine), int(cfg.batch_size)):
            batch = [rows[i] for i in mine[start : start + int(cfg.batch_size)]]
            pixels = sampler.draw([{lv: r[lv] for lv in levels} for r in batch], [r["seed"] for r in batch],
                                  progress=advance)
            for r, px in zip(batch, pixels):
                write_png(out / r["path"], px)
            drawn += len(batch)
            bar.n = drawn  # exact count once the batch is on disk (the per-step shares are floats)
            bar.refresh()
        bar.close()
    state.wait_for_everyone()
    summary = {"taxa": len(plan), "images": len(images), "pending": len(pending), "drawn_here": drawn,
               "removed": removed, "capped_classes": sorted(set(plan.loc[plan["capped"], levels[0]]))}
    if state.is_main_process:
        summary["stale_removed"] = _finish(out, images, levels, settings)
    return summary


# --------------------------------------------------------------------------------------------------
# Person-facing CLI: one lineage -> a grid PNG


def load_known_lineages(path: str | Path, levels: list[str]) -> list[tuple]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found (run the prepare stage, or pass --taxonomy)")
    data = read_json(path)
    if list(data.get("levels", [])) != list(levels):
        raise UserError(f"{path}: levels {data.get('levels')} differ from the model's levels {list(levels)}")
    return [tuple(str(n) for n in lin) for lin in data.get("lineages", [])]


def parse_lineage(text: str, known: list[tuple], levels: list[str], where: str) -> list[str]:
    """``"A/B/C"`` -> known names ``[A, B, C]``, matched level by level against the taxonomy.

    Names may contain ``/`` themselves (FishNet: ``Perciformes/Scorpaenoidei``): at each level the longest
    run of pieces that is a known child wins. At species level the epithet alone is accepted too.
    """
    pieces = [p.strip() for p in text.split("/")]
    if not text.strip() or any(not p for p in pieces):
        raise UserError(f"--lineage {text!r}: expected names separated by '/', coarse to fine (e.g. "
                        f"'{'/'.join(levels[:3])}')")
    names: list[str] = []
    pos = 0
    while pos < len(pieces):
        level = len(names)
        if level >= len(levels):
            raise UserError(f"--lineage {text!r}: more names than levels ({', '.join(levels)})")
        children = sorted({lin[level] for lin in known if list(lin[:level]) == names})
        match = None
        for end in range(len(pieces), pos, -1):
            cand = "/".join(pieces[pos:end])
            if cand in children:
                match = (cand, end)
                break
            if levels[level] == "species" and names and f"{names[-1]} {cand}" in children:
                match = (f"{names[-1]} {cand}", end)
                break
        if match is None:
            wanted = pieces[pos]
            epithet_only = levels[level] == "species" and names and " " not in wanted
            close = difflib.get_close_matches(f"{names[-1]} {wanted}" if epithet_only else wanted, children, n=5,
                                              cutoff=0.5)
            under = f" under {levels[level - 1]} '{names[-1]}'" if names else ""
            hint = f"closest: {', '.join(close)}" if close else (
                f"known: {', '.join(children[:8])}" + (f" (+{len(children) - 8} more)" if len(children) > 8 else ""))
            raise UserError(f"--lineage {text!r}: no {levels[level]} '{wanted}'{under} in {where}; {hint}")
        names.append(match[0])
        pos = match[1]
    return names


def draw_grid(params: Params, names: list[str], n: int, model_dir, seed: int, steps=None, scale=None,
              device=None, zoom: int = 0):
    """``n`` images of one lineage (seeds as in mass generation) as a PIL grid."""
    from .sampling import grid

    levels = params.level_names
    cut_off = len(names) - 1
    check_model_dir(model_dir, levels, cut_off)
    settings = SamplingSettings.from_params(params, steps=steps, scale=scale)
    sampler = load_sampler(model_dir, params, settings, cut_off, device)
    lineage = {lv: (names[i] if i <= cut_off else NONE) for i, lv in enumerate(levels)}
    key = lineage_key(names)
    seeds = [image_seed(seed, key, i) for i in range(n)]
    pixels = sampler.draw([lineage] * n, seeds)
    image = grid(pixels, rows=max(1, math.isqrt(n)))
    zoom = zoom or max(1, 128 // pixels.shape[1])
    if zoom > 1:
        image = image.resize((image.width * zoom, image.height * zoom), 0)  # nearest: keep the pixels
    return image, settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m taxadiffusion.generate",
        description="Draw a grid of images of one lineage with a trained TaxaDiffusion level.",
    )
    parser.add_argument("--lineage", required=True, help="names coarse to fine, '/'-separated; may stop early")
    parser.add_argument("-n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--out", default="grid.png", help="grid PNG to write (default grid.png)")
    parser.add_argument("--model", default=None, help="trained level folder (default models/<level of the lineage>)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--taxonomy", default=None,
                        help="known lineages (default <model>/taxonomy.json, else data/prepared/taxonomy.json)")
    parser.add_argument("--seed", type=int, default=None, help="default generate.seed")
    parser.add_argument("--steps", type=int, default=None, help="default num_inference_steps")
    parser.add_argument("--scale", type=float, default=None, help="guidance scale (default guidance_scale)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    parser.add_argument("--zoom", type=int, default=0, help="nearest-neighbour upscale (default: tiles >= 128 px)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.n < 1:
            raise UserError(f"-n {args.n}: must be >= 1")
        params = load_params(args.params)
        levels = params.level_names
        given = Path(args.model) / "taxonomy.json" if args.model else None
        taxonomy = Path(args.taxonomy) if args.taxonomy else (
            given if given is not None and given.exists() else Path("data/prepared/taxonomy.json"))
        names = parse_lineage(args.lineage, load_known_lineages(taxonomy, levels), levels, str(taxonomy))
        model_dir = Path(args.model or f"models/{levels[len(names) - 1]}")
        seed = params.generate.seed if args.seed is None else args.seed
        image, settings = draw_grid(params, names, args.n, model_dir, seed, args.steps, args.scale, args.device,
                                    args.zoom)
        with atomic_path(args.out) as tmp:
            image.save(tmp, format="PNG")
        log.info("wrote %s: %d image(s) of %s (%s, %d steps, %s scale %g, seed %d, model %s)", args.out, args.n,
                 "/".join(names), settings.sampler, settings.steps, settings.guidance, settings.scale, seed, model_dir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
