"""Pooled metrics of the ``evaluate`` stage, from what the pass over the classes collected
(:class:`~taxadiffusion.metrics.class_metrics.Collected`): ``summary.json`` ``overall`` (all generated images
against all real images of the generated classes, plus class means) and ``per_level`` (taxa grouped by
lineage prefix at each level)."""

from __future__ import annotations

import numpy as np

from taxadiffusion.metrics.class_metrics import Collected
from taxadiffusion.metrics.frechet import frechet_distance
from taxadiffusion.metrics.inputs import Inputs
from taxadiffusion.metrics.probe import level_accuracy
from taxadiffusion.metrics.rarity import acc_by_rarity, hit_rates, rates_by_rarity
from taxadiffusion.metrics.sample_size import Sides, level_reading, pooled_reading
from taxadiffusion.metrics.stats import fid_or_none, finite_mean


def overall(inp: Inputs, acc: Collected) -> dict:
    out: dict = {b.name: _pooled_fid(inp, acc, b.name) for b in inp.bb.features}
    out["probe"].update(_overall_probe(inp, acc))
    classes = acc.per_class.values()
    for m in inp.bb.lpips:
        out[m.name] = {"lpips": finite_mean(acc.lpips[m.name]),
                       "lpips_class_mean": finite_mean(e[m.name]["lpips"] for e in classes),
                       "diversity": pooled_diversity(acc, m.name)}
    if inp.bb.bioclip is not None:
        out[inp.bb.bioclip.name] = {"score": finite_mean(acc.bioclip_level[len(inp.levels)]),
                                    **_overall_zeroshot(inp, acc)}
    return out


CLASS_MEANS = ("fid_floor", "kid", "precision", "recall")  # sample_size numbers also given as a mean over classes


def _pooled_fid(inp: Inputs, acc: Collected, name: str) -> dict:
    """Pooled: all generated vs all real of the generated classes (the floor's other side: their train images),
    and class means."""
    ridx = inp.reference()
    fg = np.stack([acc.feats_gen[name][i] for i in range(len(inp.gen))])
    fr = np.stack([acc.feats_real[name][i] for i in ridx]) if ridx else np.zeros((0, fg.shape[1]))
    tidx = [i for c in inp.gen_classes for i in inp.train_classes.get(c, [])]
    ft = np.stack([acc.feats_train[name][i] for i in tidx]) if tidx else np.zeros((0, fg.shape[1]))
    sides = Sides(fr, fg, ft, [k for k, i in enumerate(ridx) if inp.real.splits[i] == "test"])
    per = acc.per_class.values()
    return {
        "fid": fid_or_none(fr, fg),
        "fid_class_mean": finite_mean(e[name]["fid"] for e in per),
        **pooled_reading(inp.cfg, sides, (name, "pooled"), acc.nn[name]),
        **{f"{key}_class_mean": finite_mean(e[name][key] for e in per) for key in CLASS_MEANS},
    }


def _overall_probe(inp: Inputs, acc: Collected) -> dict:
    """The probe's pooled distance and accuracies, overall and by rarity, for the generated and the real images."""
    probe, levels = inp.bb.probe, inp.levels
    labels = probe.labels(inp.gen.lineages)
    gen_acc = level_accuracy(acc.probe_pred, labels, levels)
    # The same split of the real test images: the ceiling each bucket's accuracy is read against (a probe that
    # cannot tell a rare species in real photos cannot credit a generated one either). Test images only, whatever
    # the reference (evaluate.real_split, evaluate.protocol): the probe trained on the others.
    ridx = [i for i in sorted(acc.real_pred) if inp.real.splits[i] == "test"]
    real_lineages = [inp.real.lineages[i] for i in ridx]
    rpred = np.stack([acc.real_pred[i] for i in ridx]) if ridx else np.zeros((0, len(levels)), np.int64)
    return {
        "dist": finite_mean(acc.dist),
        "diversity": pooled_diversity(acc, probe.name),
        "acc": {lv: v["acc"] for lv, v in gen_acc.items()},
        "unseen": {lv: v["unseen"] for lv, v in gen_acc.items() if v["unseen"]},
        "real_test_acc": probe.info["real_test_acc"],
        "acc_by_rarity": acc_by_rarity(acc.probe_pred, labels, inp.gen.lineages, inp.n_train, levels),
        "real_acc_by_rarity": acc_by_rarity(rpred, probe.labels(real_lineages), real_lineages, inp.n_train, levels),
    }


def _overall_zeroshot(inp: Inputs, acc: Collected) -> dict:
    """BioCLIP's zero-shot top-1 / top-5 per level over every generated image and every real test image (the
    ceiling), overall and by rarity (``zeroshot``; none without a zero-shot classifier)."""
    if inp.bb.zeroshot is None:
        return {}
    levels, ridx = inp.levels, sorted(acc.zeroshot_real)
    real = {key: np.array([acc.zeroshot_real[i][k] for i in ridx]).reshape(-1, len(levels))
            for k, key in enumerate(("top1", "top5"))}
    real_lineages = [inp.real.lineages[i] for i in ridx]
    return {"zeroshot": {
        **_zeroshot_rates(inp, acc),
        "n_real_test": len(ridx),
        "by_rarity": rates_by_rarity(acc.zeroshot, inp.gen.lineages, inp.n_train, levels),
        "real_by_rarity": rates_by_rarity(real, real_lineages, inp.n_train, levels),
    }}


def _zeroshot_rates(inp: Inputs, acc: Collected) -> dict:
    """``{"top1", "top5", "real_test_top1", "real_test_top5"}``, each per level, over all images (empty without a
    zero-shot classifier)."""
    if inp.bb.zeroshot is None:
        return {}
    levels, real = inp.levels, list(acc.zeroshot_real.values())
    return {"top1": hit_rates(acc.zeroshot["top1"], levels), "top5": hit_rates(acc.zeroshot["top5"], levels),
            "real_test_top1": hit_rates(np.array([r[0] for r in real]), levels),
            "real_test_top5": hit_rates(np.array([r[1] for r in real]), levels)}


def pooled_diversity(acc: Collected, name: str) -> dict:
    """Within-species diversity over every class's diversity pairs (``pairing``), generated and real."""
    pairs = acc.diversity.get(name, {"generated": [], "real": []})
    return {"generated": finite_mean(pairs["generated"]), "real": finite_mean(pairs["real"]),
            "pairs_generated": len(pairs["generated"]), "pairs_real": len(pairs["real"])}


def per_level(inp: Inputs, acc: Collected) -> dict:
    """Per level: taxa grouped by lineage prefix; Fréchet distance per taxon with >= 2 images on both sides,
    averaged over taxa; probe accuracy and BioCLIP (prompt cut at that level) over all generated images."""
    gen_acc = level_accuracy(acc.probe_pred, inp.bb.probe.labels(inp.gen.lineages), inp.levels)
    zeroshot = _zeroshot_rates(inp, acc)  # BioCLIP zero-shot: each level is its own column of the hits
    out = {}
    for k, lv in enumerate(inp.levels):
        g_groups, r_groups, t_groups = inp.gen.groups(k), inp.real.groups(k), inp.train.groups(k)
        entry: dict = {"n_taxa": len(g_groups)}
        for b in inp.bb.features:
            entry[b.name] = _level_fid(inp.cfg, acc, b.name, g_groups, r_groups, t_groups)
        entry["probe"]["acc"] = gen_acc[lv]["acc"]
        if inp.bb.bioclip is not None:
            entry[inp.bb.bioclip.name] = {"score": finite_mean(acc.bioclip_level[k + 1]),
                                          **{key: rates[lv] for key, rates in zeroshot.items()}}
        out[lv] = entry
    return out


def _level_fid(cfg, acc: Collected, name: str, g_groups: dict, r_groups: dict, t_groups: dict) -> dict:
    """Mean Fréchet distance over the level's taxa with >= 2 images on both sides; how many, and how many of those
    under ``evaluate.min_images_for_fid`` images on a side; over the same taxa the mean KID and FID floor
    (``sample_size``; a taxon without a floor, too few train images, is left out of that mean)."""
    feats_real, feats_gen, feats_train = acc.feats_real[name], acc.feats_gen[name], acc.feats_train[name]
    fids, readings, small = [], [], 0
    for taxon, gidx in g_groups.items():
        ridx = [i for i in r_groups.get(taxon, []) if i in feats_real]
        if len(ridx) >= 2 and len(gidx) >= 2:
            fr = np.stack([feats_real[i] for i in ridx])
            fg = np.stack([feats_gen[i] for i in gidx])
            fids.append(frechet_distance(fr, fg))
            small += min(len(ridx), len(gidx)) < cfg.min_images_for_fid
            tidx = [i for i in t_groups.get(taxon, []) if i in feats_train]
            ft = np.stack([feats_train[i] for i in tidx]) if tidx else np.zeros((0, fr.shape[1]))
            readings.append(level_reading(cfg, Sides(fr, fg, ft, []), (name, "/".join(taxon))))
    return {"fid": finite_mean(fids), "n_taxa_fid": len(fids), "n_taxa_small_sample": small,
            "fid_floor": finite_mean(r["fid_floor"] for r in readings),
            "n_taxa_floor": sum(r["fid_floor"] is not None for r in readings),
            "kid": finite_mean(r["kid"] for r in readings)}
