"""What a FID at Table S2's sizes is read against (metrics/kid.py, manifold.py, sample_size.py): KID equals
torchmetrics' and torch-fidelity's on the same features and FID torchmetrics' (to 1e-5 relative), the floor follows
its stated rule, precision / recall / density / coverage follow their definitions (NAVER's prdc), the memorisation
check flags copies, and the ``evaluate`` outputs carry the new columns, the level table's †, and the same bytes
on a second run."""

from __future__ import annotations

import filecmp
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.backbones import IdentityFeatures
from helpers.metrics_world import LEVELS, metrics_params, trained_world
from torch_fidelity.metric_kid import kid_features_to_metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate
from taxadiffusion.metrics.frechet import frechet_distance
from taxadiffusion.metrics.kid import kid
from taxadiffusion.metrics.manifold import class_memorisation, prdc
from taxadiffusion.metrics.sample_size import Sides, draw_seed, floor

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)
REL = 1e-5




def _two_sets(n1: int, n2: int, d: int, seed: int = 0, shift: float = 0.4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n1, d)), rng.normal(shift, 1.2, size=(n2, d))


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def test_kid_equals_torchmetrics_kernel_inception_distance():
    """Equal sizes, subsets of the whole set: every subset is the full set, whatever either side draws."""
    fr, fg = _two_sets(40, 40, 32)
    ours = kid(fr, fg, subsets=3, cap=1000, seed=1)
    metric = KernelInceptionDistance(feature=IdentityFeatures(32), subsets=2, subset_size=40, normalize=True)
    metric.set_dtype(torch.float64)
    metric.update(torch.from_numpy(fr), real=True)
    metric.update(torch.from_numpy(fg), real=False)
    mean, sd = (float(v) for v in metric.compute())
    assert ours["kid_subset_size"] == 40 and mean > 0.05
    assert _rel(ours["kid"], mean) < REL and ours["kid_sd"] == pytest.approx(sd, abs=1e-12)


def test_kid_over_subsets_equals_torchmetrics_and_torch_fidelity_on_the_same_subsets():
    """Unequal sizes: m = min(n_real, n_gen, cap) rows per subset, drawn without replacement, as torch-fidelity
    draws them (RandomState(seed).choice, real then generated); torchmetrics' own MMD on those subsets agrees."""
    fr, fg = _two_sets(19, 250, 64, seed=2)
    ours = kid(fr, fg, subsets=20, cap=1000, seed=7)
    assert ours["kid_subset_size"] == 19
    rng = np.random.RandomState(7)
    values = []
    for _ in range(20):
        a, b = rng.choice(19, 19, replace=False), rng.choice(250, 19, replace=False)
        assert len(set(b)) == 19  # without replacement
        values.append(float(poly_mmd(torch.from_numpy(fr[a]), torch.from_numpy(fg[b]))))
    assert _rel(ours["kid"], float(np.mean(values))) < REL and _rel(ours["kid_sd"], float(np.std(values))) < REL
    tf = kid_features_to_metric(torch.from_numpy(fr), torch.from_numpy(fg), kid_subsets=20, kid_subset_size=19,
                                rng_seed=7, verbose=False)
    assert _rel(ours["kid"], tf["kernel_inception_distance_mean"]) < REL
    assert _rel(ours["kid_sd"], tf["kernel_inception_distance_std"]) < REL
    assert kid(fr, fg, 20, 10, 7)["kid_subset_size"] == 10 and kid(fr[:1], fg, 20, 10, 7) is None


@pytest.mark.parametrize("n1,n2,d", [(19, 250, 256), (250, 300, 64)])  # Table S2 sizes (low-rank path) and stats
def test_fid_equals_torchmetrics_at_table_s2_sizes(n1, n2, d):
    fr, fg = _two_sets(n1, n2, d, seed=3)
    metric = FrechetInceptionDistance(feature=IdentityFeatures(d), normalize=True)
    metric.set_dtype(torch.float64)
    metric.update(torch.from_numpy(fr), real=True)
    metric.update(torch.from_numpy(fg), real=False)
    assert _rel(frechet_distance(fr, fg), float(metric.compute())) < REL


def test_floor_rule_and_what_it_shows():
    """Same-distribution features: the floor (real train sample vs the reference) is about the FID of a perfect
    generator at the same sizes, KID sits near 0; a shifted generator's FID stands well above its floor."""
    cfg = metrics_params(seed=3).evaluate
    rng = np.random.default_rng(4)
    real, train, same = (rng.normal(size=(n, 32)) for n in (19, 300, 250))
    sides = Sides(real, same, train, list(range(19)))
    out = floor(cfg, sides, ("probe", "X"))
    assert out["floor_sizes"] == [19, 250]
    pick = np.sort(np.random.default_rng(draw_seed(cfg, "probe", "X", "floor")).choice(300, 250, replace=False))
    assert out["fid_floor"] == pytest.approx(frechet_distance(real, train[pick]), rel=1e-12)
    fid_same = frechet_distance(real, same)
    assert 0.5 < out["fid_floor"] / fid_same < 2.0 and fid_same > 5  # the bias: same distribution, FID far from 0
    k = kid(real, same, 100, 1000, 0)
    assert abs(k["kid"]) < 3 * k["kid_sd"] + 0.05
    shifted = Sides(real, same + 2.0, train, [])
    assert frechet_distance(real, shifted.generated) > 3 * floor(cfg, shifted, ("probe", "X"))["fid_floor"]
    assert floor(cfg, Sides(real, same, train[:1], []), ("probe", "X"))["fid_floor"] is None
    halves = floor(metrics_params(real_split="train+test").evaluate, Sides(real, same, train, []), ("p", "X"))
    assert halves["floor_sizes"] == [10, 9]  # two disjoint halves of the 19 reference images


def _prdc_by_definition(real, fake, k):
    """Kynkäänniemi / Naeem et al. written out with full distance matrices (the k-th neighbour without itself)."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    r_rad = np.sort(dist(real, real), axis=1)[:, k]
    f_rad = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)
    return {"precision": (d < r_rad[:, None]).any(0).mean(), "recall": (d < f_rad[None, :]).any(1).mean(),
            "density": (d < r_rad[:, None]).sum(0).mean() / k, "coverage": (d.min(1) < r_rad).mean()}


def test_prdc_follows_the_definitions_and_naver_prdc(monkeypatch):
    import taxadiffusion.metrics.manifold as manifold

    fr, fg = _two_sets(60, 45, 8, seed=5, shift=0.5)
    ours = prdc(fr, fg, 3)
    assert ours == pytest.approx(_prdc_by_definition(fr, fg, 3), abs=1e-12)
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1
    monkeypatch.setattr(manifold, "CHUNK_ENTRIES", 50)  # row chunks give the same numbers
    assert prdc(fr, fg, 3) == ours
    same = prdc(fr, fr + 1e-9, 3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert prdc(fr, fg + 100.0, 3) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    assert prdc(fr[:3], fg, 3)["precision"] is None
    naver = pytest.importorskip("prdc")
    theirs = naver.compute_prdc(fr, fg, 3)
    assert ours == pytest.approx({k: float(v) for k, v in theirs.items()}, abs=1e-12)


def test_memorisation_flags_copies_of_training_images():
    rng = np.random.default_rng(6)
    train, test, fresh = rng.normal(size=(200, 16)), rng.normal(size=(60, 16)), rng.normal(size=(80, 16))
    copies = train[:80] + rng.normal(0, 1e-3, size=(80, 16))
    mem_copies, d_gen, d_test = class_memorisation(copies, test, train)
    mem_fresh, _, _ = class_memorisation(fresh, test, train)
    assert len(d_gen) == 80 and len(d_test) == 60
    assert mem_copies["nn_train_ratio"] < 0.01 and mem_copies["closer_than_test_p5"] == 1.0
    assert 0.8 < mem_fresh["nn_train_ratio"] < 1.25 and mem_fresh["closer_than_test_p5"] < 0.2
    assert class_memorisation(fresh, test, train[:0])[0]["nn_train_ratio"] is None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return trained_world(tmp_path_factory.mktemp("world"))[1:]  # shards, generated, probe


def test_evaluate_writes_the_sample_size_columns_deterministically(world, tmp_path):
    shards, gen, probe = world
    cfg = metrics_params(min_images_for_fid=6).evaluate  # classes: 9 and 6 test images; every species: 3
    runs = [evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / f"m{i}", tmp_path / "features"))
            for i in (1, 2)]  # the second from the cache
    aves = runs[0]["per_class"]["Aves"]["probe"]
    assert aves["floor_sizes"] == [9, 12] and aves["kid_subset_size"] == 9 and aves["fid_subsets"]["sizes"] == [7, 10]
    for key in ("fid_floor", "kid", "kid_sd", "kid_floor", "precision", "recall", "density", "coverage"):
        assert isinstance(aves[key], float), key
    assert aves["memorisation"]["n_test"] == 9 and aves["memorisation"]["nn_train_ratio"] > 0
    overall = runs[0]["overall"]["probe"]
    assert overall["floor_sizes"] == [15, 20] and overall["memorisation"]["n_test"] == 15
    assert {"kid_class_mean", "fid_floor_class_mean", "precision_class_mean", "recall_class_mean"} <= set(overall)
    assert runs[0]["data"]["sample_size"]["floor_rule"] == "train-vs-reference" and runs[0]["data"]["n_train"] == 30
    for name in ("summary.json", "class_metrics.csv", "class_metrics.md", "level_metrics.md", "class/all.json"):
        assert filecmp.cmp(tmp_path / "m1" / name, tmp_path / "m2" / name, shallow=False), name  # seeded

    out = tmp_path / "m1"
    table = pd.read_csv(out / "class_metrics.csv")
    for col in ("FID floor (probe)", "FID subset sd (probe)", "KID (probe)", "KID sd (probe)", "KID floor (probe)",
                "Precision (probe)", "Recall (probe)", "Density (probe)", "Coverage (probe)",
                "NN-train ratio (probe)", "Closer than test p5 (probe)"):
        assert col in table.columns, col
    md = (out / "class_metrics.md").read_text()
    assert "FID floor" in md and "no sample-size bias" in md
    row = json.loads((out / "class" / "Aves.json").read_text())["probe"]
    assert list(row)[:5] == ["fid", "fid_floor", "kid", "precision", "recall"] and row["kid"] == aves["kid"]
    levels = pd.read_csv(out / "level_metrics.csv").set_index("Level")
    assert levels.loc["species", "# small-sample taxa"] == 5 and levels.loc["species", "fid_small_sample"]
    assert not levels.loc["class", "fid_small_sample"] and levels.loc["class", "# small-sample taxa"] == 0
    species_row = next(r for r in (out / "level_metrics.md").read_text().splitlines() if r.startswith("| species"))
    assert "†" in species_row and "FID floor (probe, mean over taxa)" in (out / "level_metrics.md").read_text()


def test_train_plus_test_reference_floors_on_halves(world, tmp_path):
    shards, gen, probe = world
    cfg = metrics_params(real_split="train+test").evaluate
    summary = evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / "m", tmp_path / "f"))
    aves = summary["per_class"]["Aves"]["probe"]
    assert summary["data"]["sample_size"]["floor_rule"] == "reference-halves"
    assert aves["floor_sizes"] == [14, 13]  # 27 reference images (18 train + 9 test) in two halves
    assert aves["memorisation"]["n_test"] == 9  # the reference's test images only
