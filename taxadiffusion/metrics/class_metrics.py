"""Per-class metrics of the ``evaluate`` stage (one ``summary.json`` ``per_class`` entry per class), and what
the pass over the classes keeps for the pooled and per-level metrics (:class:`Collected`). A class is a taxon of
``evaluate.group_level`` (Table S2: class; the key keeps the paper's name whatever the level).

Each class's generated images are decoded once, up front; the real reference (and the train images) a batch at a
time, only when a backbone's cached features miss or an LPIPS net needs the pixels (:class:`ClassImages`,
``data.LazyImages``: a paper-scale class's real images at 512 px do not fit in memory decoded). Metrics computed from a
backbone's features (real from the cache, generated fresh) all go through :func:`feature_metrics`; the
pixel-space ones (LPIPS, BioCLIP) have one function each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
from PIL import Image

from taxadiffusion.metrics.data import LazyImages
from taxadiffusion.metrics.inputs import Inputs
from taxadiffusion.metrics.pairing import (
    Pairs,
    batch_mean,
    cosine_distance,
    diversity_pairs,
    make_pairs,
    real_groups,
    taxon_groups,
)
from taxadiffusion.metrics.probe import level_accuracy
from taxadiffusion.metrics.protocol import AUTHORS, AUTHORS_LPIPS_BATCH, compare_size
from taxadiffusion.metrics.rarity import hit_rates
from taxadiffusion.metrics.sample_size import Sides, class_reading
from taxadiffusion.metrics.stats import fid_or_none, finite_mean


@dataclass
class Collected:
    """What one pass over the classes collects, by image index, for the pooled and per-level metrics."""

    feats_gen: dict[str, dict[int, np.ndarray]]  # backbone -> generated image index -> feature row
    feats_real: dict[str, dict[int, np.ndarray]]  # backbone -> real image index -> feature row
    probe_pred: np.ndarray  # [n_generated, n_levels]: the probe's prediction per level
    real_pred: dict[int, np.ndarray] = field(default_factory=dict)  # reference image index -> the same
    bioclip_level: dict[int, np.ndarray] = field(default_factory=dict)  # depth -> [n_generated] BioCLIP scores
    lpips: dict[str, list] = field(default_factory=dict)  # LPIPS net -> every pair's distance
    dist: list = field(default_factory=list)  # the probe's paired 1-cos distances, every pair
    diversity: dict = field(default_factory=dict)  # backbone -> {"generated": [...], "real": [...]} pair distances
    unpaired: dict = field(default_factory=dict)  # drawn taxon key -> generated images without a real one
    zeroshot: dict = field(default_factory=dict)  # "top1" / "top5" -> [n_generated, n_levels] hits (-1: not scored)
    zeroshot_real: dict = field(default_factory=dict)  # real test image index -> (top-1 row, top-5 row)
    per_class: dict[str, dict] = field(default_factory=dict)  # class -> its summary.json entry
    grids: dict[str, list] = field(default_factory=dict)  # class -> grid picks (grids.write_grids)
    feats_train: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # backbone -> train index -> row
    nn: dict[str, dict] = field(default_factory=dict)  # backbone -> nearest-training-image distances (sample_size)

    @classmethod
    def empty(cls, inp: Inputs) -> Collected:
        names = [b.name for b in inp.bb.features]
        return cls(feats_gen={n: {} for n in names}, feats_real={n: {} for n in names},
                   probe_pred=np.zeros((len(inp.gen), len(inp.levels)), np.int64),
                   lpips={m.name: [] for m in inp.bb.lpips}, feats_train={n: {} for n in names},
                   nn={n: {} for n in names})


@dataclass
class ClassImages:
    """One class: its generated and real image indices (sorted by key), the generated images decoded, the real ones
    decoded when indexed, and which of them are compared (``pairing``: generated vs real, and the diversity pairs
    within each side). ``generated`` / ``real`` are at the protocol's comparison size (``protocol``); ``native`` /
    ``real_native`` at the generation size, which the probe and BioCLIP always see (the same arrays under
    ``heldout``)."""

    name: str
    gidx: list[int]
    ridx: list[int]
    generated: np.ndarray
    real_hash: str  # the real-data version in the feature cache's keys
    real_keys: list[str]
    decode_real: Callable[[], LazyImages]  # decoded a batch at a time (a paper-scale reference does not fit decoded)
    decode_native: Callable[[], np.ndarray]  # the generated images at the generation size
    native_hash: str  # real_hash at the generation size
    decode_real_native: Callable[[], LazyImages]
    pairs: Pairs  # generated vs real (positions in gidx / ridx)
    div_gen: tuple[np.ndarray, np.ndarray]  # diversity pairs of generated images (positions in gidx)
    div_real: tuple[np.ndarray, np.ndarray]  # the same of the real images (positions in ridx)

    @cached_property
    def real(self) -> LazyImages:
        return self.decode_real()

    @cached_property
    def native(self) -> np.ndarray:
        return self.decode_native()

    @cached_property
    def real_native(self) -> LazyImages:
        return self.real if self.native_hash == self.real_hash else self.decode_real_native()

    @property
    def n_pair(self) -> int:
        """The smaller side (the Fréchet distance's small-sample flag)."""
        return min(len(self.ridx), len(self.gidx))


@dataclass
class ClassFeatures:
    """One backbone's features of one class: ``real`` from the cache, ``generated`` computed, ``train`` (the class's
    real train images: the floor and the memorisation check) from the cache."""

    backbone: object
    real: np.ndarray
    generated: np.ndarray
    train: np.ndarray


def class_images(inp: Inputs, cls: str, gidx: list[int]) -> ClassImages:
    ridx = inp.real_classes.get(cls, [])
    size, resample, tag = compare_size(inp.cfg, inp.gen_size)  # evaluate.protocol (metrics/protocol.py)
    # The real-data version: content of this class's reference images, at the resolution they are compared.
    content = inp.real.content_hash(ridx)
    real_hash, native_hash = content + f"|{size[0]}x{size[1]}{tag}", content + f"|{inp.gen_size[0]}x{inp.gen_size[1]}"
    gen_lineages, real_lineages = [inp.gen.lineages[i] for i in gidx], [inp.real.lineages[i] for i in ridx]
    groups, cap = taxon_groups(gen_lineages), inp.cfg.diversity_pairs
    generated = inp.gen.decode(gidx, size, resample)
    return ClassImages(name=cls, gidx=gidx, ridx=ridx, generated=generated,
                       real_hash=real_hash, real_keys=[inp.real.keys[i] for i in ridx],
                       decode_real=lambda: inp.real.lazy(ridx, size, resample),
                       decode_native=lambda: generated if real_hash == native_hash else inp.gen.decode(gidx),
                       native_hash=native_hash, decode_real_native=lambda: inp.real.lazy(ridx, inp.gen_size),
                       pairs=make_pairs(gen_lineages, real_lineages, inp.cfg.protocol),
                       div_gen=diversity_pairs(groups, cap, f"{cls}|generated"),
                       div_real=diversity_pairs(real_groups(groups, real_lineages), cap, f"{cls}|real"))


def class_entry(inp: Inputs, acc: Collected, images: ClassImages) -> dict:
    """The class's ``per_class`` entry: counts, then one sub-entry per backbone (feature backbones, LPIPS nets,
    BioCLIP); what the pooled metrics need goes into ``acc``."""
    entry = _class_counts(inp, images)
    entry.update({"n_real": len(images.ridx), "fid_small_sample": images.n_pair < inp.cfg.min_images_for_fid})
    unpaired = images.pairs.unpaired  # drawn taxa without a real image: their generated images are not paired
    entry.update({"species_without_real": len(unpaired), "images_without_real": sum(unpaired.values())})
    acc.unpaired.update(images.pairs.unpaired)
    for b in inp.bb.features:
        feats = class_features(inp, images, b)
        acc.feats_real[b.name].update(zip(images.ridx, feats.real))
        acc.feats_gen[b.name].update(zip(images.gidx, feats.generated))
        acc.feats_train[b.name].update(zip(inp.train_classes.get(images.name, []), feats.train))
        entry[b.name] = feature_metrics(inp, acc, images, feats)
    for m in inp.bb.lpips:
        entry[m.name] = _lpips_metrics(inp, acc, images, m)
    if inp.bb.bioclip is not None:
        entry[inp.bb.bioclip.name] = _bioclip_metrics(inp, acc, images)
    return entry


def class_features(inp: Inputs, images: ClassImages, backbone) -> ClassFeatures:
    bs, own = inp.cfg.batch_size, backbone is inp.bb.probe  # the probe: at the generation size (ClassImages)
    real = inp.cache.features(backbone.name, backbone.cache_id, images.name,
                              images.native_hash if own else images.real_hash, images.real_keys,
                              lambda: backbone.features(images.real_native if own else images.real, bs))
    generated = backbone.features(images.native if own else images.generated, bs)
    return ClassFeatures(backbone, real, generated, _train_features(inp, images, backbone))


def _train_features(inp: Inputs, images: ClassImages, backbone) -> np.ndarray:
    """The class's real train images in ``backbone``'s features, through the same cache as the reference (its own
    ``<backbone>-train/`` folder; decoded only on a miss), at the size the backbone compares (``class_features``)."""
    tidx = inp.train_classes.get(images.name, [])
    size, resample, tag = compare_size(inp.cfg, inp.gen_size)
    if backbone is inp.bb.probe:
        size, resample, tag = tuple(inp.gen_size), Image.LANCZOS, ""
    train_hash = inp.train.content_hash(tidx) + f"|{size[0]}x{size[1]}{tag}|train"
    return inp.cache.features(f"{backbone.name}-train", backbone.cache_id, images.name, train_hash,
                              [inp.train.keys[i] for i in tidx],
                              lambda: backbone.features(inp.train.lazy(tidx, size, resample), inp.cfg.batch_size))


def feature_metrics(inp: Inputs, acc: Collected, images: ClassImages, feats: ClassFeatures) -> dict:
    """Every per-class metric computed from one backbone's features: the Fréchet distance, what to read it against
    (``sample_size``: floor, KID, interval, precision / recall, memorisation), and for the probe its paired distance
    and accuracies."""
    out = {"fid": fid_or_none(feats.real, feats.generated)}
    test_rows = [k for k, i in enumerate(images.ridx) if inp.real.splits[i] == "test"]
    sides = Sides(feats.real, feats.generated, feats.train, test_rows)
    out.update(class_reading(inp.cfg, sides, (feats.backbone.name, images.name), acc.nn[feats.backbone.name]))
    if feats.backbone is inp.bb.probe:
        out.update(_probe_metrics(inp, acc, images, feats))
    return out


def _probe_metrics(inp: Inputs, acc: Collected, images: ClassImages, feats: ClassFeatures) -> dict:
    """1-cos of the generated-vs-real pairs (the LPIPS pairs, ``pairing``) and within-species diversity, top-1 per
    level of the generated images, and the probe's own top-1 on this class's real test images. The distances and
    the predictions for the generated and the real images go into ``acc``."""
    probe, levels, pairs = inp.bb.probe, inp.levels, images.pairs
    d = cosine_distance(feats.real[pairs.real], feats.generated[pairs.gen])
    rows = {"generated": feats.generated, "real": feats.real}  # probe features: at the generation size
    diversity = _diversity(acc, probe.name, images, lambda side, a, b: cosine_distance(rows[side][a], rows[side][b]))
    pred = probe.predict_features(feats.generated)
    gen_acc = level_accuracy(pred, probe.labels([inp.gen.lineages[i] for i in images.gidx]), levels)
    real_pred = probe.predict_features(feats.real)
    test = [k for k, i in enumerate(images.ridx) if inp.real.splits[i] == "test"]
    real_acc = level_accuracy(real_pred[test], probe.labels([inp.real.lineages[images.ridx[k]] for k in test]), levels)
    acc.dist.extend(d.tolist())
    acc.probe_pred[images.gidx] = pred
    acc.real_pred.update(zip(images.ridx, real_pred))
    return {
        "dist": finite_mean(d),
        "pairs": len(pairs),
        "diversity": diversity,
        "acc": {lv: v["acc"] for lv, v in gen_acc.items()},
        "unseen": {lv: v["unseen"] for lv, v in gen_acc.items() if v["unseen"]},
        "real_test_acc": {lv: v["acc"] for lv, v in real_acc.items()},
    }


def _lpips_metrics(inp: Inputs, acc: Collected, images: ClassImages, metric) -> dict:
    """LPIPS of the generated-vs-real pairs (``pairing``) and the within-species diversity of each side."""
    bs, pairs = inp.cfg.batch_size, images.pairs
    values = metric.indexed(images.real, images.generated, pairs.real, pairs.gen, bs) if len(pairs) else np.zeros(0)
    acc.lpips[metric.name].extend(values.tolist())
    pixels = {"generated": lambda: images.generated, "real": lambda: images.real}
    diversity = _diversity(acc, metric.name, images,
                           lambda side, a, b: metric.indexed(pixels[side](), pixels[side](), a, b, bs))
    # authors: lpips.py's average, a mean of per-batch means (metrics/protocol.py)
    value = batch_mean(values, AUTHORS_LPIPS_BATCH) if inp.cfg.protocol == AUTHORS else finite_mean(values)
    return {"lpips": value, "pairs": len(pairs), "diversity": diversity}


def _diversity(acc: Collected, name: str, images: ClassImages, distance: Callable) -> dict:
    """Mean ``distance(side, positions a, positions b)`` over the diversity pairs of each side (``pairing``); every
    pair's distance goes into ``acc``."""
    out = {}
    for side, (a, b) in (("generated", images.div_gen), ("real", images.div_real)):
        values = np.asarray(distance(side, a, b)) if len(a) else np.zeros(0)
        acc.diversity.setdefault(name, {"generated": [], "real": []})[side].extend(values.tolist())
        out[side] = finite_mean(values)
        out[f"pairs_{side}"] = int(len(a))
    return out


def _bioclip_metrics(inp: Inputs, acc: Collected, images: ClassImages) -> dict:
    """BioCLIP score of the generated images with their lineage's prompt; every depth's scores (prompt cut at
    that level) go into ``acc`` for the per-level table, the full lineage's mean is the class's score."""
    bioclip, depths = inp.bb.bioclip, len(inp.levels)
    emb = bioclip.image_embeddings(images.native, inp.cfg.batch_size)
    lineages = [inp.gen.lineages[i] for i in images.gidx]
    for depth in range(1, depths + 1):
        acc.bioclip_level.setdefault(depth, np.zeros(len(inp.gen)))[images.gidx] = bioclip.scores(emb, lineages, depth)
    out = {"score": finite_mean(acc.bioclip_level[depths][images.gidx])}
    if inp.bb.zeroshot is not None:
        out["zeroshot"] = _zeroshot_metrics(inp, acc, images, emb)
    return out


def _zeroshot_metrics(inp: Inputs, acc: Collected, images: ClassImages, emb) -> dict:
    """BioCLIP zero-shot top-1 / top-5 per level (``zeroshot``) of the generated images, each against the taxon it
    was drawn for, and of the class's real test images (the ceiling); every image's hits go into ``acc``."""
    zs, levels, n_levels = inp.bb.zeroshot, inp.levels, len(inp.levels)
    top1, top5 = zs.hits(emb, [inp.gen.lineages[i] for i in images.gidx])
    for key, hits in (("top1", top1), ("top5", top5)):
        acc.zeroshot.setdefault(key, np.full((len(inp.gen), n_levels), -1, np.int8))[images.gidx] = hits
    test = [k for k, i in enumerate(images.ridx) if inp.real.splits[i] == "test"]
    real_emb = inp.bb.bioclip.image_embeddings(images.real_native[test], inp.cfg.batch_size) if test else emb[:0]
    real1, real5 = zs.hits(real_emb, [inp.real.lineages[images.ridx[k]] for k in test])
    acc.zeroshot_real.update(zip((images.ridx[k] for k in test), zip(real1, real5)))
    return {"top1": hit_rates(top1, levels), "top5": hit_rates(top5, levels), "n_real_test": len(test),
            "real_test_top1": hit_rates(real1, levels), "real_test_top5": hit_rates(real5, levels)}


def _class_counts(inp: Inputs, images: ClassImages) -> dict:
    species = [inp.gen.lineages[i][-1] for i in images.gidx]
    counts = sorted({s: species.count(s) for s in set(species)}.values())
    per = counts[0] if counts[0] == counts[-1] else [counts[0], counts[-1]]
    # capped: some of the group's taxa were drawn under generate.max_species_per_class (which caps per levels[0])
    capped, plan, cols = None, inp.plan, inp.levels[: inp.levels.index(inp.cfg.group_level) + 1]
    if plan is not None and "capped" in plan.columns and set(cols) <= set(plan.columns):
        # a homonym's row name is its lineage prefix (data.group_names)
        key = plan[cols].astype(str).agg("/".join, axis=1) if "/" in images.name else plan[cols[-1]]
        rows = plan[key == images.name]["capped"].astype(str).str.lower()
        capped = bool(rows.isin(["true", "1", "yes"]).any()) if len(rows) else None
    return {"n_generated": len(images.gidx), "n_species": len(counts), "images_per_species": per, "capped": capped}
