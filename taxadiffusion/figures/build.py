"""The ``figures`` stage: Figs. S2, S5 and S6 of the supplement from the final trained level.

Output folder (built whole, then swapped in): ``fig_s2_embeddings.png``, ``fig_s5_guidance.png``,
``fig_s6_attention.png`` and ``figures.json`` (per figure: the taxa, seeds, settings and scores it shows,
or ``skipped`` with the reason; no timings, so the same inputs give the same bytes). The taxa follow the
rules of :mod:`.select`; the sampler is the run's own (``params.sampling``), as in mass generation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from taxadiffusion.config import Experiment, FiguresConfig, SamplingConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_dir, write_json
from taxadiffusion.core.lineage import lineage_key
from taxadiffusion.figures import FIGURE_FILES, FIGURES_FILE, select
from taxadiffusion.figures.attention import attention_figure
from taxadiffusion.figures.embeddings import embedding_figure
from taxadiffusion.figures.guidance import guidance_figure
from taxadiffusion.models.level import check_level_dir
from taxadiffusion.sampling.level_sampler import load_sampler

log = logging.getLogger(__name__)
MIN_EMBEDDED_TAXA = 4  # t-SNE and a silhouette need a few points


def _timed(name: str, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    log.info("figures: %s in %.1f s", name, time.perf_counter() - start)
    return out


def _s2(sampler, table, levels: list[str], cfg: FiguresConfig, seed: int, out: Path) -> dict:
    k = levels.index(cfg.embedding_level)
    taxa = sorted({tuple(r) for r in table[levels[: k + 1]].itertuples(index=False)})
    if len(taxa) < MIN_EMBEDDED_TAXA:
        return {"skipped": f"only {len(taxa)} taxa of level '{cfg.embedding_level}' (t-SNE needs "
                           f"{MIN_EMBEDDED_TAXA}); set figures.embedding_level to a finer level"}
    png, info = embedding_figure(sampler.model, [select.taxon(t, levels) for t in taxa], k, cfg.tsne_perplexity, seed)
    (out / FIGURE_FILES["s2"]).write_bytes(png)
    return {"file": FIGURE_FILES["s2"], **info}


def _s5(sampler, table, shards, levels: list[str], cfg: FiguresConfig, seed: int, out: Path) -> dict:
    k = sampler.cut_off
    taxa = select.round_robin(table, levels, k, cfg.guidance_species)
    if not taxa:
        return {"skipped": "no test taxa in the prepared table"}
    real = select.real_images(shards, levels, k, taxa, cfg.real_images)
    image, seeds = guidance_figure(sampler, taxa, levels, real, seed, cfg)
    image.save(out / FIGURE_FILES["s5"], format="PNG")
    return {"file": FIGURE_FILES["s5"], "rule": "test taxa, classes in turn, most training images first",
            "taxa": [lineage_key(t) for t in taxa], "seeds": seeds, "scales": cfg.guidance_scales,
            "real_images": {lineage_key(t): len(real[t]) for t in taxa}}


def _s6(sampler, table, levels: list[str], cfg: FiguresConfig, seed: int, out: Path) -> dict:
    k = sampler.cut_off
    found = select.sibling_taxa(table, levels, k, cfg.attention_species)
    if found is None:
        group = levels[k - 1] if k else "(none: the target level is the first)"
        return {"skipped": f"no {group} with {cfg.attention_species} or more test taxa of level '{levels[k]}'"}
    group, taxa = found
    image, seeds = attention_figure(sampler, group, taxa, seed, cfg.tile)
    image.save(out / FIGURE_FILES["s6"], format="PNG")
    return {"file": FIGURE_FILES["s6"], "group": lineage_key(group), "group_level": levels[k - 1],
            "taxa": [lineage_key(t) for t in taxa], "seeds": seeds, "levels": levels[: k + 1],
            "rule": "the group with >= n test taxa and most training images; its n test taxa with most images",
            "definition": "softmax(Q K_i^T) with K_i from level i's module output alone, at the tokens of its "
                          "name; mean over heads, tokens, cross-attention layers and steps (docs/figures.md)"}


@dataclass(frozen=True)
class FigurePaths:
    """What the ``figures`` stage reads and writes (the paths of its ``cmd`` in dvc.yaml)."""

    model: Path  # the trained level the figures are drawn with (models/<generate.target_level>)
    prepared: Path  # the prepared table (data/prepared): which taxa the figures show
    shards: Path  # real training images (data/shards), drawn next to the generated ones
    out: Path  # the figures folder

    def __post_init__(self):
        for name in ("model", "prepared", "shards", "out"):
            object.__setattr__(self, name, Path(getattr(self, name)))


def make_figures(cfg: FiguresConfig, sampling: SamplingConfig, exp: Experiment, target_level: str,
                 paths: FigurePaths, device=None) -> dict:
    """Write the figures folder ``paths.out`` (module docstring); returns what ``figures.json`` holds."""
    levels, seed, model_dir = exp.levels, exp.seed, paths.model
    if target_level not in levels:
        raise UserError(f"generate.target_level={target_level!r}: expected one of {levels}")
    k = levels.index(target_level)
    if cfg.embedding_level not in levels[: k + 1]:
        raise UserError(f"params.yaml figures.embedding_level={cfg.embedding_level!r}: expected one of "
                        f"{levels[: k + 1]} (the levels down to generate.target_level)")
    check_level_dir(model_dir, levels, k)
    table = select.read_table(paths.prepared, levels)
    sampler = _timed("load model", load_sampler, model_dir, exp.model, sampling, k, device)
    info = {"model": str(model_dir), "seed": seed, "sampling": dataclasses.asdict(sampling),
            "target_level": target_level}
    with atomic_dir(paths.out) as tmp:
        info["s2"] = _timed("Fig. S2", _s2, sampler, table, levels, cfg, seed, tmp)
        info["s5"] = _timed("Fig. S5", _s5, sampler, table, paths.shards, levels, cfg, seed, tmp)
        info["s6"] = _timed("Fig. S6", _s6, sampler, table, levels, cfg, seed, tmp)
        write_json(tmp / FIGURES_FILE, info)
    for name in ("s2", "s5", "s6"):
        if "skipped" in info[name]:
            log.info("figures: %s skipped: %s", name, info[name]["skipped"])
    return info
