"""Previews during training: a small fixed-seed grid of a few taxa of the level being trained.

The training loop (``training._loop``, main process only) builds one :class:`TrainingPreviews` per run and
calls it after every step; every ``preview.every`` steps and at the last step it draws::

    taxa, seeds = preview_batch(run.lineages, levels, cut_off, seed, cfg.taxa, cfg.per_taxon)   # once
    image = preview_grid(TaxaModel(base, raw.conditioner, run.cache, levels, config), cut_off, taxa, seeds,
                         cfg.sampling, title=f"{level}, step {step}")
    live.log_image(preview_name(step), image)        # -> <log dir>/plots/images/preview/step-000050.png

A resumed run draws the previews after its checkpoint again: the same weights, so the same bytes.

The same taxa and seeds at every step, so the grids of one level show the same noise becoming the taxa.
The modules are switched to eval mode for the preview (no dropout) and back to their own modes after it;
sampling draws its noise from per-image generators, so the training RNG streams are untouched and a
resumed run gives the same weights. The report (``report/build.py``) shows every ``PREVIEW_GLOB`` file per level.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator, Sequence

import torch

from taxadiffusion.config import PreviewConfig, SamplingConfig
from taxadiffusion.core.lineage import NONE, image_seed, lineage_key
from taxadiffusion.figures import PREVIEW_DIR, layout
from taxadiffusion.models.conditioner import ModelLevels
from taxadiffusion.models.taxa import TaxaModel
from taxadiffusion.sampling.level_sampler import TaxaSampler
from taxadiffusion.training.run import Run

MAX_TILE = 256  # larger images (SD1.5: 512 px) are shrunk: a preview stays a few hundred kB



def preview_name(step: int) -> str:
    """dvclive ``log_image`` name of the preview after ``step`` optimiser steps."""
    return f"{PREVIEW_DIR}/step-{int(step):06d}.png"


def preview_batch(lineages: Sequence[dict], levels: list[str], cut_off: int, seed: int, n_taxa: int,
                  per_taxon: int) -> tuple[list[dict], list[int]]:
    """``n_taxa`` taxa of level ``cut_off`` from the training lineages (one per image), ``per_taxon`` images
    each: classes in name order take turns, each giving its taxa with most images first (ties: by name).
    Returns one lineage dict (finer levels ``NONE``) and one seed (``plan.image_seed``) per image."""
    names = levels[: cut_off + 1]
    # partial lineages (prepare.finest_required) name no taxon at the finer levels: never previewed
    counts = Counter(tuple(str(lin[lv]) for lv in names) for lin in lineages
                     if all(lin[lv] not in (None, NONE) for lv in names))
    by_class: dict[str, list[tuple]] = defaultdict(list)
    for taxon in counts:
        by_class[taxon[0]].append(taxon)
    queues = [sorted(v, key=lambda t: (-counts[t], t)) for _, v in sorted(by_class.items())]
    picked = [q[d] for d in range(max(map(len, queues), default=0)) for q in queues if d < len(q)][:n_taxa]
    out, seeds = [], []
    for taxon in picked:
        lin = {lv: (taxon[i] if i <= cut_off else NONE) for i, lv in enumerate(levels)}
        for i in range(per_taxon):
            out.append(lin)
            seeds.append(image_seed(seed, lineage_key(taxon), i))
    return out, seeds


@contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Every submodule in eval mode inside the block, back to its own ``training`` flag after it."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def preview_grid(model: TaxaModel, cut_off: int, lineages: Sequence[dict], seeds: Sequence[int],
                 sampling: SamplingConfig, title: str | None = None, tile: int = 64):
    """A PIL grid: one row per taxon (consecutive equal lineages), one column per image.

    ``model`` may hold the modules being trained (LoRA unmerged): they run under ``no_grad`` in eval mode.
    The UNet runs on one call of ``2 * len(seeds)`` rows per step (no padding to the mass-generation chunk).
    """
    # under train.mixed_precision the frozen base weights are bf16/fp16 (training/precision.py): the preview runs
    # under the same autocast as the training step
    half = next((p.dtype for p in model.base.unet.parameters() if p.dtype != torch.float32), None)
    device = next(model.base.unet.parameters()).device.type
    with eval_mode(model.base.unet, model.conditioner), torch.autocast(device, dtype=half, enabled=half is not None):
        sampler = TaxaSampler(model, sampling, cut_off, dtype=torch.float32, rows=2 * len(seeds),
                              scale_param="preview.scale")
        pixels = sampler.draw(list(lineages), list(seeds)).float().numpy()
    rows: list[tuple[str, list]] = []
    last = None
    for lin, img in zip(lineages, pixels):
        key = lineage_key(lin[lv] for lv in model.levels[: cut_off + 1])
        if key != last:
            rows.append((str(lin[model.levels[cut_off]]), []))
            last = key
        rows[-1][1].append(layout.tile(img, max(tile, min(img.shape[0], MAX_TILE))))
    per_row = max(len(t) for _, t in rows)
    size = rows[0][1][0].width
    headers = [f"image {i + 1}" for i in range(per_row)]
    return layout.table(rows, headers, size, label_chars=max(12, math.ceil(size / 6)), title=title)


class TrainingPreviews:
    """The previews of one training run (module docstring): ``maybe_log(live, step)`` after every step."""

    def __init__(self, cfg: PreviewConfig, model: TaxaModel, lineages: Sequence[dict], cut_off: int,
                 total_steps: int):
        self.cfg, self.model, self.cut_off, self.total = cfg, model, int(cut_off), int(total_steps)
        self.taxa, self.seeds = preview_batch(lineages, list(model.levels), self.cut_off, model.config.seed,
                                              cfg.taxa, cfg.per_taxon)
        self.title = model.config.level

    @classmethod
    def of_run(cls, cfg: PreviewConfig, run: Run) -> "TrainingPreviews":
        """Previews drawn with the modules ``run`` is training: the base's own frozen parts with the UNet being
        trained (its LoRA unmerged) and the condition module."""
        config = run.config
        levels = ModelLevels(config.levels, config.species_text)
        model = TaxaModel(replace(run.base, unet=run.raw.unet), run.raw.conditioner, run.cache, levels, config)
        return cls(cfg, model, run.lineages, run.spec.cut_off, run.spec.steps)

    def due(self, step: int) -> bool:
        """After ``step`` optimiser steps: every ``preview.every`` steps and at the last (0: never)."""
        every = self.cfg.every
        return bool(every and self.taxa) and (step % every == 0 or step == self.total)

    def maybe_log(self, live, step: int) -> None:
        if not self.due(step):
            return
        image = preview_grid(self.model, self.cut_off, self.taxa, self.seeds, self.cfg.sampling,
                             title=f"{self.title}, step {step}")
        live.log_image(preview_name(step), image)
