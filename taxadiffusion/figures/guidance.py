"""Fig. S5: the same taxa and seeds at several guidance scales, next to real training images.

Rows: the taxa of ``select.round_robin``; columns: ``figures.guidance_scales`` (diffusers convention
``s = 1 + w``, docs/method.md §3; at ``s = 0`` only the guidance branch is left: for TaxaGuide the same
lineage through the level-0 module), then real training images. Every cell of a row starts from the
same noise: seed ``plan.image_seed(seed, taxon, 0)``, image 0 of that taxon in mass generation.

All cells are denoised in one batch with a per-row scale (``[B, 1, 1, 1]`` broadcast in the guidance
update), through the sampler's fixed-shape UNet calls, so each cell equals a run at its own scale alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from taxadiffusion.config import FiguresConfig
from taxadiffusion.core.lineage import image_seed, lineage_key
from taxadiffusion.figures import layout
from taxadiffusion.sampling.denoise import make_scheduler, sample, to_uint8
from taxadiffusion.sampling.level_sampler import DECODE_ROWS, TaxaSampler, fixed_rows


@torch.no_grad()
def draw_scales(sampler: TaxaSampler, lineages: Sequence[dict], seeds: Sequence[int],
                scales: Sequence[float]) -> torch.Tensor:
    """uint8 ``[len(lineages) * len(scales), H, W, 3]``, lineage-major: image ``(i, j)`` is lineage ``i``
    with seed ``seeds[i]`` at ``scales[j]``."""
    rows = [(lin, seed, float(s)) for lin, seed in zip(lineages, seeds) for s in scales]
    pairs = [sampler.context(lin) for lin, _, _ in rows]
    cond = torch.cat([c for c, _ in pairs])
    neg = torch.cat([n for _, n in pairs])
    scale = torch.tensor([s for _, _, s in rows], dtype=sampler.dtype, device=cond.device).view(-1, 1, 1, 1)
    st = sampler.sampling
    scheduler = make_scheduler(st.sampler, sampler.model.base.scheduler_config)
    latents = sample(sampler.unet, scheduler, cond, neg, [seed for _, seed, _ in rows], sampler.latent_shape,
                     st.steps, scale, st.guidance_range, dtype=sampler.dtype)
    return to_uint8(fixed_rows(sampler.model.base.decode_latents, DECODE_ROWS, latents))


def guidance_figure(sampler: TaxaSampler, taxa: list[tuple], levels: list[str], real: dict[tuple, list[np.ndarray]],
                    seed: int, cfg: FiguresConfig):
    """Fig. S5 as a PIL image, and the seeds used (one per row): ``cfg.guidance_scales`` across,
    ``cfg.real_images`` real images per row, ``cfg.tile`` pixels a tile."""
    scales, n_real, tile = cfg.guidance_scales, cfg.real_images, cfg.tile
    k = sampler.cut_off
    lineages = [{lv: (lin[i] if i <= k else "None") for i, lv in enumerate(levels)} for lin in taxa]
    seeds = [image_seed(seed, lineage_key(lin), 0) for lin in taxa]
    pixels = draw_scales(sampler, lineages, seeds, scales).numpy()
    n = len(scales)
    rows = []
    for i, lin in enumerate(taxa):
        tiles = [layout.tile(pixels[i * n + j], tile) for j in range(n)]
        shown = real.get(tuple(lin), [])[:n_real]
        tiles += [layout.tile(img, tile) for img in shown]
        rows.append((f"{lin[-1]} ({lin[0]})", tiles))
    headers = [f"s = {s:g}" for s in scales] + (["real"] + [""] * (n_real - 1) if n_real else [])
    title = (f"guidance scale sweep ({sampler.sampling.guidance}, {sampler.sampling.sampler}, "
             f"{sampler.sampling.steps} steps); same seed along each row")
    return layout.table(rows, headers, tile, gap_before=(n,) if n_real else (), title=title), seeds
