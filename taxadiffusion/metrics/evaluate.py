"""The ``evaluate`` stage: class-level FID / LPIPS / BioCLIP (supplement Table S2) plus probe metrics.

Per class (docs/method.md §5, "one FID/LPIPS/BioCLIP computed over the pooled images of each class"):
- Fréchet distance in each feature backbone's space (Inception pool3 = FID; probe penultimate features),
  real reference = real images of the class from ``evaluate.real_split`` (test, or train+test);
- LPIPS, real_i vs generated_i (``lpips_metric``), and the probe's paired 1-cos distance under the same rule;
- BioCLIP score (``bioclip``);
- probe top-1 accuracy per level of generated images for the taxon they were drawn for, overall also split by
  how many training images that taxon has (``rarity``: 1-2, 3-5, 6-20, >20).
The same is repeated per taxonomic level (taxa grouped by lineage prefix) for the per-level table. Every
number in the outputs names its backbone: ``inception``, ``vgg``/``alex`` (LPIPS), ``bioclip-v1``, ``probe``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from taxadiffusion.config import EvaluateConfig
from taxadiffusion.core.files import write_json
from taxadiffusion.metrics.cache import FeatureCache
from taxadiffusion.metrics.data import REAL_SPLITS, ImageSet, read_generated, read_plan, read_real
from taxadiffusion.metrics.frechet import frechet_distance
from taxadiffusion.metrics.grids import write_grids
from taxadiffusion.metrics.probe import level_accuracy, load_probe
from taxadiffusion.metrics.rarity import acc_by_rarity, train_counts
from taxadiffusion.metrics.tables import write_tables

log = logging.getLogger(__name__)

def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _fid(fr: np.ndarray, fg: np.ndarray) -> Optional[float]:
    return frechet_distance(fr, fg) if len(fr) >= 2 and len(fg) >= 2 else None


class Backbones:
    """Everything ``evaluate.backbones`` asks for, loaded up front so that missing weights fail before any work."""

    def __init__(self, cfg: EvaluateConfig, levels: list[str], probe_dir: str | Path):
        asked = set(cfg.backbones)
        # The probe is always computed: it is the backbone that needs no downloaded weights.
        self.probe = load_probe(probe_dir, levels)
        self.features = [self.probe]
        self.probe.name = "probe"
        self.probe.info = {
            "metric": "Fréchet distance, paired 1-cos, per-level top-1",
            "impl": "small CNN taxonomy classifier trained on the real train split (stages/probe.py)",
            "features": f"penultimate, {self.probe.config['feature_dim']}-d",
            "resolution": self.probe.config["resolution"],
            "weights": str(Path(probe_dir) / "probe.safetensors"),
            "real_test_acc": {lv: v["acc"] for lv, v in self.probe.config.get("test_acc", {}).items()},
            "pairing": "real_i vs generated_i within the class (sorted order), min(n_real, n_gen) pairs",
        }
        # The pretrained backbones are imported only when asked for: torch-fidelity, lpips and open_clip
        # are heavy, and the default run (probe only) never needs them.
        if "inception" in asked:
            from taxadiffusion.metrics.backbones import InceptionBackbone

            self.features.append(InceptionBackbone(cfg.inception_weights))
        nets = sorted({n for n in ("vgg", "alex") if n in asked} | ({cfg.lpips_net} if "lpips" in asked else set()))
        self.lpips = []
        if nets:
            from taxadiffusion.metrics.lpips_metric import LPIPSMetric

            for net in nets:
                # evaluate.lpips_weights is the trunk file of evaluate.lpips_net.
                weights = cfg.lpips_weights if net == cfg.lpips_net else None
                self.lpips.append(LPIPSMetric(net, weights))
        self.bioclip = None
        if "bioclip" in asked:
            from taxadiffusion.metrics.bioclip import BioCLIPScorer

            self.bioclip = BioCLIPScorer(cfg.bioclip_model, cfg.bioclip_template, levels)

    def info(self) -> dict:
        out = {b.name: b.info for b in self.features}
        out.update({m.name: m.info for m in self.lpips})
        if self.bioclip is not None:
            out[self.bioclip.name] = self.bioclip.info
        return out


def _class_counts(gen: ImageSet, gidx: list[int], plan, cls: str, levels: list[str]) -> dict:
    species = [gen.lineages[i][-1] for i in gidx]
    counts = sorted({s: species.count(s) for s in set(species)}.values())
    per = counts[0] if counts[0] == counts[-1] else [counts[0], counts[-1]]
    capped = None
    if plan is not None and "capped" in plan.columns and levels[0] in plan.columns:
        rows = plan[plan[levels[0]] == cls]["capped"].astype(str).str.lower()
        capped = bool(rows.isin(["true", "1", "yes"]).any()) if len(rows) else None
    return {"n_generated": len(gidx), "n_species": len(counts), "images_per_species": per, "capped": capped}


def evaluate(cfg: EvaluateConfig, levels: list[str], shards_dir: str | Path, generated_dir: str | Path,
             probe_dir: str | Path, out_dir: str | Path, cache_dir: str | Path) -> dict:
    """The ``evaluate`` stage (docs/architecture.md): per-class, per-level and overall metrics of the generated
    images against the real ones, for every backbone asked for; writes ``summary.json``, tables and grids.

    Longer than our ~60-line rule: one pass over the classes fills five accumulators (features, probe predictions,
    LPIPS, BioCLIP, grids) that the pooled and per-level metrics below need together; splitting it would pass them
    all around."""
    bb = Backbones(cfg, levels, probe_dir)
    gen, manifest = read_generated(generated_dir, levels)
    real = read_real(shards_dir, REAL_SPLITS[cfg.real_split], levels)
    plan = read_plan(generated_dir)
    n_train = train_counts(shards_dir, levels)  # training images per taxon, for the accuracy by rarity
    cache = FeatureCache(cache_dir)
    gen_size = gen.image_size()
    bs = cfg.batch_size

    gen_classes, real_classes = gen.by_class(), real.by_class()
    feats_gen: dict[str, dict[int, np.ndarray]] = {b.name: {} for b in bb.features}
    feats_real: dict[str, dict[int, np.ndarray]] = {b.name: {} for b in bb.features}
    probe_pred = np.zeros((len(gen), len(levels)), np.int64)
    real_pred: dict[int, np.ndarray] = {}  # reference image index -> the probe's prediction per level
    bioclip_level: dict[int, np.ndarray] = {}
    per_class: dict[str, dict] = {}
    lpips_all: dict[str, list] = {m.name: [] for m in bb.lpips}
    dist_all: list = []
    grids: dict[str, tuple] = {}

    for cls, gidx in tqdm(gen_classes.items(), desc="evaluate classes"):
        ridx = real_classes.get(cls, [])
        g_img = gen.decode(gidx, gen_size)
        r_cache: list = []

        def real_images(ridx=ridx, r_cache=r_cache):  # decoded once per class, only when needed
            if not r_cache:
                r_cache.append(real.decode(ridx, gen_size))
            return r_cache[0]

        entry = _class_counts(gen, gidx, plan, cls, levels)
        n_pair = min(len(ridx), len(gidx))  # LPIPS / probe pairs: real_i with generated_i
        entry.update({"n_real": len(ridx), "fid_small_sample": n_pair < cfg.min_images_for_fid})
        # The real-data version: content of this class's reference images, at the resolution they are compared.
        data_hash = real.content_hash(ridx) + f"|{gen_size[0]}x{gen_size[1]}"
        keys = [real.keys[i] for i in ridx]
        for b in bb.features:
            fr = cache.features(b.name, b.cache_id, cls, data_hash, keys, lambda b=b: b.features(real_images(), bs))
            fg = b.features(g_img, bs)
            feats_real[b.name].update(zip(ridx, fr))
            feats_gen[b.name].update(zip(gidx, fg))
            entry[b.name] = {"fid": _fid(fr, fg)}
            if b is bb.probe:
                d, pred, rpred = _probe_entry(entry["probe"], bb.probe, fr, fg, n_pair, gen, gidx, real, ridx, levels)
                dist_all.extend(d.tolist())
                probe_pred[gidx] = pred
                real_pred.update(zip(ridx, rpred))
        for m in bb.lpips:
            values = m.paired(real_images(), g_img, bs) if n_pair else np.zeros(0)
            lpips_all[m.name].extend(values.tolist())
            entry[m.name] = {"lpips": _mean(values), "pairs": n_pair}
        if bb.bioclip is not None:
            emb = bb.bioclip.image_embeddings(g_img, bs)
            lineages = [gen.lineages[i] for i in gidx]
            for depth in range(1, len(levels) + 1):
                bioclip_level.setdefault(depth, np.zeros(len(gen)))[gidx] = bb.bioclip.scores(emb, lineages, depth)
            entry[bb.bioclip.name] = {"score": _mean(bioclip_level[len(levels)][gidx])}
        per_class[cls] = entry
        grids[cls] = _grid_picks(gen, gidx, real, ridx, cfg.grid_species)

    overall = _overall(bb, gen, gen_classes, real_classes, feats_gen, feats_real, per_class, lpips_all, dist_all,
                       probe_pred, bioclip_level, levels)
    overall["probe"]["acc_by_rarity"] = acc_by_rarity(probe_pred, bb.probe.labels(gen.lineages), gen.lineages,
                                                      n_train, levels)
    # The same split of the real reference images: the ceiling each bucket's accuracy is read against (a probe
    # that cannot tell a rare species in real photos cannot credit a generated one either).
    ridx = sorted(real_pred)
    real_lineages = [real.lineages[i] for i in ridx]
    rpred = np.stack([real_pred[i] for i in ridx]) if ridx else np.zeros((0, len(levels)), np.int64)
    overall["probe"]["real_acc_by_rarity"] = acc_by_rarity(rpred, bb.probe.labels(real_lineages), real_lineages,
                                                           n_train, levels)
    per_level = _per_level(bb, gen, real, feats_gen, feats_real, probe_pred, bioclip_level, levels, cfg.min_images_for_fid)
    data = _data_section(cfg, gen, gen_classes, real_classes, gen_size, manifest, cache)
    summary = {"backbones": bb.info(), "data": data, "overall": overall, "per_class": per_class, "per_level": per_level}
    out_dir = Path(out_dir)
    write_json(out_dir / "summary.json", summary)
    write_tables(summary, levels, out_dir)
    write_grids(grids, gen, real, gen_size, out_dir / "plots" / "grids")
    log.info("evaluate: %d classes, %d generated images; cache %d hit(s), %d miss(es); wrote %s",
             len(per_class), len(gen), cache.hits, cache.misses, out_dir)
    return summary


def _data_section(cfg: EvaluateConfig, gen: ImageSet, gen_classes: dict, real_classes: dict, gen_size, manifest,
                  cache: FeatureCache) -> dict:
    """``summary.json`` ``data``: what was compared with what."""
    return {
        "real_split": cfg.real_split,
        "n_generated": len(gen),
        "n_real": sum(len(real_classes.get(c, [])) for c in gen_classes),
        "generation_resolution": list(gen_size),
        "min_images_for_fid": cfg.min_images_for_fid,
        "classes_without_real_images": sorted(c for c in gen_classes if c not in real_classes),
        "real_classes_not_generated": sorted(c for c in real_classes if c not in gen_classes),
        "generation": {
            col: sorted(set(manifest[col])) for col in ("sampler", "steps", "guidance", "scale") if col in manifest.columns
        },
        "feature_cache": str(cache.dir),
    }


def _probe_entry(entry: dict, probe, fr, fg, n_pair: int, gen: ImageSet, gidx, real: ImageSet, ridx, levels):
    """Probe metrics of one class into ``entry``: paired 1-cos on L2-normalised features (the LPIPS pairing
    rule), top-1 per level of the generated images, and the probe's own top-1 on this class's real test images.
    Returns the distances and the probe's predictions for the generated and for the real images."""
    a = fr[:n_pair] / np.linalg.norm(fr[:n_pair], axis=1, keepdims=True).clip(1e-12)
    c = fg[:n_pair] / np.linalg.norm(fg[:n_pair], axis=1, keepdims=True).clip(1e-12)
    d = 1.0 - (a * c).sum(1)
    pred = probe.predict_features(fg)
    acc = level_accuracy(pred, probe.labels([gen.lineages[i] for i in gidx]), levels)
    real_pred = probe.predict_features(fr)
    test = [k for k, i in enumerate(ridx) if real.splits[i] == "test"]
    real_acc = level_accuracy(real_pred[test], probe.labels([real.lineages[ridx[k]] for k in test]), levels)
    entry.update(
        {
            "dist": _mean(d),
            "pairs": n_pair,
            "acc": {lv: v["acc"] for lv, v in acc.items()},
            "unseen": {lv: v["unseen"] for lv, v in acc.items() if v["unseen"]},
            "real_test_acc": {lv: v["acc"] for lv, v in real_acc.items()},
        }
    )
    return d, pred, real_pred


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


def _overall(bb, gen, gen_classes, real_classes, feats_gen, feats_real, per_class, lpips_all, dist_all,
             probe_pred, bioclip_level, levels) -> dict:
    out: dict = {}
    ridx_all = [i for c in gen_classes for i in real_classes.get(c, [])]
    for b in bb.features:
        fg = np.stack([feats_gen[b.name][i] for i in range(len(gen))])
        fr = np.stack([feats_real[b.name][i] for i in ridx_all]) if ridx_all else np.zeros((0, fg.shape[1]))
        out[b.name] = {
            "fid": _fid(fr, fg),  # pooled: all generated vs all real of the generated classes
            "fid_class_mean": _mean(e[b.name]["fid"] for e in per_class.values()),
        }
    acc = level_accuracy(probe_pred, bb.probe.labels(gen.lineages), levels)
    out["probe"].update(
        {
            "dist": _mean(dist_all),
            "acc": {lv: v["acc"] for lv, v in acc.items()},
            "unseen": {lv: v["unseen"] for lv, v in acc.items() if v["unseen"]},
            "real_test_acc": bb.probe.info["real_test_acc"],
        }
    )
    for m in bb.lpips:
        out[m.name] = {"lpips": _mean(lpips_all[m.name]), "lpips_class_mean": _mean(e[m.name]["lpips"] for e in per_class.values())}
    if bb.bioclip is not None:
        out[bb.bioclip.name] = {"score": _mean(bioclip_level[len(levels)])}
    return out


def _per_level(bb, gen, real, feats_gen, feats_real, probe_pred, bioclip_level, levels, min_images) -> dict:
    """Per level: taxa grouped by lineage prefix; Fréchet distance per taxon with >= 2 images on both sides,
    averaged over taxa; probe accuracy and BioCLIP (prompt cut at that level) over all generated images."""
    labels = bb.probe.labels(gen.lineages)
    acc = level_accuracy(probe_pred, labels, levels)
    out = {}
    for k, lv in enumerate(levels):
        g_groups, r_groups = gen.groups(k), real.groups(k)
        entry: dict = {"n_taxa": len(g_groups)}
        for b in bb.features:
            fids, small = [], 0
            for taxon, gidx in g_groups.items():
                ridx = [i for i in r_groups.get(taxon, []) if i in feats_real[b.name]]
                if len(ridx) >= 2 and len(gidx) >= 2:
                    fr = np.stack([feats_real[b.name][i] for i in ridx])
                    fg = np.stack([feats_gen[b.name][i] for i in gidx])
                    fids.append(frechet_distance(fr, fg))
                    small += min(len(ridx), len(gidx)) < min_images
            entry[b.name] = {"fid": _mean(fids), "n_taxa_fid": len(fids), "n_taxa_small_sample": small}
        entry["probe"]["acc"] = acc[lv]["acc"]
        if bb.bioclip is not None:
            entry[bb.bioclip.name] = {"score": _mean(bioclip_level[k + 1])}
        out[lv] = entry
    return out

