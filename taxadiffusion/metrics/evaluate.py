"""The ``evaluate`` stage: class-level FID / LPIPS / BioCLIP (supplement Table S2) plus probe metrics.

Per class (docs/method.md §5, "one FID/LPIPS/BioCLIP computed over the pooled images of each class"; a class is a
taxon of ``evaluate.group_level``, Table S2's class by default):
- Fréchet distance in each feature backbone's space (Inception pool3 = FID; probe penultimate features),
  real reference = real images of the class from ``evaluate.real_split`` (test, or train+test; every real image
  under ``evaluate.protocol: authors``, the co-author's evaluation scripts: ``protocol``), read against the
  real-vs-real FID floor, KID ± sd, a FID interval from subsets, precision / recall / density / coverage and a
  memorisation check against the class's real train images (``sample_size``, ``kid``, ``manifold``);
- LPIPS (``lpips_metric``) and the probe's 1-cos of generated-vs-real pairs within species, and the within-species
  diversity of each side (``pairing``);
- BioCLIP score (``bioclip``) and BioCLIP's zero-shot top-1 / top-5 per level over the dataset's species, for the
  generated images and the real test images (``zeroshot``);
- probe top-1 accuracy per level of generated images for the taxon they were drawn for, overall also split by
  how many training images that taxon has (``rarity``: 1-2, 3-5, 6-20, >20).
The same is repeated per taxonomic level (taxa grouped by lineage prefix) for the per-level table. Every
number in the outputs names its backbone: ``inception``, ``vgg``/``alex`` (LPIPS), ``bioclip-v1``, ``probe``.

Layout: ``inputs`` loads what the stage reads (paths, backbones, images); ``class_metrics`` computes one class's
entry and collects what the pooled metrics need; ``pooled`` computes ``overall`` and ``per_level`` from that;
this module runs the pass over the classes and writes ``summary.json``, the tables and the grids.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from taxadiffusion.config import EvaluateConfig
from taxadiffusion.core.files import staged_outputs, write_json
from taxadiffusion.metrics.class_metrics import Collected, class_entry, class_images
from taxadiffusion.metrics.data import ImageSet, read_index
from taxadiffusion.metrics.grids import write_grids
from taxadiffusion.metrics.inputs import EvaluatePaths, Inputs, load_inputs
from taxadiffusion.metrics.pooled import overall, per_level
from taxadiffusion.metrics.protocol import describe as describe_protocol
from taxadiffusion.metrics.protocol import reference_splits
from taxadiffusion.metrics.sample_size import settings as sample_size_settings
from taxadiffusion.metrics.tables import write_tables
from taxadiffusion.metrics.zeroshot import attach as attach_zeroshot

__all__ = ["EvaluatePaths", "evaluate"]

log = logging.getLogger(__name__)


def evaluate(cfg: EvaluateConfig, levels: list[str], paths: EvaluatePaths) -> dict:
    """The ``evaluate`` stage (docs/architecture.md): per-class, per-level and overall metrics of the generated
    images against the real ones, for every backbone asked for; writes ``summary.json``, tables and grids."""
    inp = load_inputs(cfg, levels, paths)
    attach_zeroshot(inp)
    acc = Collected.empty(inp)
    for cls, gidx in tqdm(inp.gen_classes.items(), desc=f"evaluate per {cfg.group_level}"):
        images = class_images(inp, cls, gidx)
        acc.per_class[cls] = class_entry(inp, acc, images)
        acc.grids[cls] = _grid_picks(inp.gen, gidx, inp.real, images.ridx, cfg.grid_species)
    summary = {"backbones": inp.bb.info(), "data": _data_section(inp, acc), "overall": overall(inp, acc),
               "per_class": acc.per_class, "per_level": per_level(inp, acc)}
    # the real images' preprocessing (the authors' protocol stretches; dataset.preprocess: resize does it too)
    summary["data"]["shards_preprocess"] = read_index(paths.shards, levels).get("preprocess")
    out_dir = Path(paths.out)
    with staged_outputs(out_dir) as staging:  # all of them or none: a failure leaves the earlier outputs whole
        write_json(staging / "summary.json", summary)
        write_tables(summary, levels, staging)
        write_grids(acc.grids, inp.gen, inp.real, inp.gen_size, staging / "plots" / "grids")
    log.info("evaluate: %d taxa of %s, %d generated images; cache %d hit(s), %d miss(es); wrote %s",
             len(acc.per_class), cfg.group_level, len(inp.gen), inp.cache.hits, inp.cache.misses, out_dir)
    return summary


def _data_section(inp: Inputs, acc: Collected) -> dict:
    """``summary.json`` ``data``: what was compared with what (and which drawn taxa had no real image to pair
    their generated images with: counted, up to 20 named)."""
    gen_classes, real_classes, manifest = inp.gen_classes, inp.real_classes, inp.manifest
    return {
        "real_split": "+".join(reference_splits(inp.cfg)),  # the reference's splits (evaluate.protocol)
        "group_level": inp.cfg.group_level,  # what per_class's keys are taxa of (tables.group_level)
        **describe_protocol(inp.cfg, inp.gen_size),
        "n_generated": len(inp.gen),
        "n_real": sum(len(real_classes.get(c, [])) for c in gen_classes),
        "generation_resolution": list(inp.gen_size),
        "min_images_for_fid": inp.cfg.min_images_for_fid,
        "sample_size": sample_size_settings(inp.cfg),  # how the floor, KID, FID interval, P/R were drawn
        "n_train": sum(len(inp.train_classes.get(c, [])) for c in gen_classes),
        "classes_without_real_images": sorted(c for c in gen_classes if c not in real_classes),
        "real_classes_not_generated": sorted(c for c in real_classes if c not in gen_classes),
        "species_without_real": {"species": len(acc.unpaired), "images": sum(acc.unpaired.values()),
                                 "examples": sorted(acc.unpaired)[:20]},
        "generation": {
            col: sorted(set(manifest[col])) for col in ("sampler", "steps", "guidance", "scale")
            if col in manifest.columns
        },
        "feature_cache": str(inp.cache.dir),
    }


def _grid_picks(gen: ImageSet, gidx, real: ImageSet, ridx, n_species: int, per_row: int = 4) -> list:
    """Up to ``n_species`` species of the class (evenly spread over the sorted list), each with up to
    ``per_row`` generated and real images: ``[(species, [gen idx], [real idx])]``."""
    by_sp: dict[str, list] = {}
    for i in gidx:
        by_sp.setdefault(gen.lineages[i][-1], []).append(i)
    real_sp: dict[str, list] = {}
    for i in ridx:
        real_sp.setdefault(real.lineages[i][-1], []).append(i)
    species = sorted(by_sp)
    if len(species) > n_species:
        species = [species[int(k)] for k in np.linspace(0, len(species) - 1, n_species).round()]
    return [(s, by_sp[s][:per_row], real_sp.get(s, [])[:per_row]) for s in species]
