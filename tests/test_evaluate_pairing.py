"""Generated-vs-real pairs (LPIPS, the probe's 1-cos) within species, every generated image scored, and the
within-species diversity of generated and real images (docs/method.md §5)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.backbones import write_random_alexnet
from helpers.metrics_world import LEVELS, metrics_params, write_generated, write_shards, write_world

from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate
from taxadiffusion.metrics.probe import fit_probe_on_shards

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

BIRDS = [("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax"),
         ("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus monedula"),
         ("Aves", "Passeriformes", "Paridae", "Parus", "Parus ater"),
         ("Aves", "Passeriformes", "Paridae", "Parus", "Parus major"),
         ("Aves", "Piciformes", "Picidae", "Picus", "Picus viridis")]


def _look(s: int) -> np.ndarray:
    """Species s's one image: every real and generated image of a species is this same picture."""
    return np.random.default_rng(s).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def _birds(root, n_test: tuple, n_gen: int = 50):
    real = [(lin, "train", _look(s)) for s, lin in enumerate(BIRDS) for _ in range(2)]
    real += [(lin, "test", _look(s)) for s, lin in enumerate(BIRDS) for _ in range(n_test[s])]
    gen = [(lin, _look(s)) for s, lin in enumerate(BIRDS) for _ in range(n_gen)]
    shards, generated = write_world(root, real, gen)
    params = metrics_params()
    fit_probe_on_shards(shards, root / "probe", LEVELS, params.probe, params.seed)
    return shards, generated, root / "probe"


def test_every_generated_image_is_paired_with_a_real_image_of_its_species(tmp_path):
    """5 species x 50 generated images against 19 real test images: the old rule paired real_i with generated_i in
    sorted order, 19 pairs all of the first species (4 of them same-species). Here each species looks alike in
    every image, so a same-species pair has distance 0 and any other pair more."""
    shards, gen, probe = _birds(tmp_path, n_test=(4, 4, 4, 4, 3))
    alex = write_random_alexnet(tmp_path / "alexnet.pth")
    cfg = metrics_params(backbones=["probe", "alex"], lpips_net="alex", lpips_weights=str(alex),
                         diversity_pairs=50).evaluate
    summary = evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / "metrics", tmp_path / "features"))
    aves = summary["per_class"]["Aves"]
    assert aves["n_generated"] == 250 and aves["n_real"] == 19
    assert aves["probe"]["pairs"] == 250 == aves["alex"]["pairs"]  # every generated image, not min(19, 250)
    assert aves["probe"]["dist"] == pytest.approx(0, abs=1e-5)  # each with a real image of its own species
    assert aves["alex"]["lpips"] == pytest.approx(0, abs=1e-6)
    assert aves["species_without_real"] == 0 and aves["images_without_real"] == 0
    # identical images within a species: no diversity on either side
    for side in ("generated", "real"):
        assert aves["probe"]["diversity"][side] == pytest.approx(0, abs=1e-5)
        assert aves["alex"]["diversity"][side] == pytest.approx(0, abs=1e-6)
    # generated: 5 x C(50, 2) pairs, a seeded 50 of them; real: 4 x C(4, 2) + C(3, 2) = 27, all of them
    assert aves["probe"]["diversity"]["pairs_generated"] == 50 == aves["alex"]["diversity"]["pairs_generated"]
    assert aves["probe"]["diversity"]["pairs_real"] == 27


def test_species_without_a_real_image_are_counted_and_said(tmp_path):
    shards, gen, probe = _birds(tmp_path, n_test=(2, 2, 0, 2, 1), n_gen=3)  # Parus ater: no test image
    cfg = metrics_params().evaluate
    summary = evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / "metrics", tmp_path / "features"))
    aves = summary["per_class"]["Aves"]
    assert (aves["species_without_real"], aves["images_without_real"]) == (1, 3)
    assert aves["probe"]["pairs"] == 12 and aves["probe"]["dist"] == pytest.approx(0, abs=1e-5)
    assert summary["data"]["species_without_real"] == {"species": 1, "images": 3,
                                                       "examples": ["Aves/Passeriformes/Paridae/Parus/Parus ater"]}
    table = pd.read_csv(tmp_path / "metrics" / "class_metrics.csv")
    assert table.loc[0, "# pairs"] == 12 and table.loc[0, "# species w/o real"] == 1
    note = (tmp_path / "metrics" / "class_metrics.md").read_text()
    assert "1 drawn species (3 generated images) without a real test image" in note


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    root = tmp_path_factory.mktemp("noisy")
    shards = write_shards(root)  # 6 train + 3 test images per species, each image its own noise
    gen = write_generated(root, n=6)
    params = metrics_params()
    fit_probe_on_shards(shards, root / "probe", LEVELS, params.probe, params.seed)
    return shards, gen, root / "probe"


def test_diversity_is_seeded_and_capped(noisy, tmp_path):
    shards, gen, probe = noisy
    runs = []
    for k, cap in enumerate((4, 4, 1000)):
        cfg = metrics_params(diversity_pairs=cap).evaluate
        runs.append(evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / f"m{k}", tmp_path / "f")))
    capped, again, full = (r["per_class"]["Aves"]["probe"]["diversity"] for r in runs)
    assert capped == again  # seeded: the same pairs every run
    assert (capped["pairs_generated"], capped["pairs_real"]) == (4, 4)
    assert (full["pairs_generated"], full["pairs_real"]) == (3 * 15, 3 * 3)  # Aves: 3 species, C(6, 2) and C(3, 2)
    assert full["generated"] > 0 and full["real"] > 0
    overall = runs[2]["overall"]["probe"]["diversity"]
    assert overall["pairs_generated"] == 5 * 15 and overall["generated"] > 0


def test_lazy_images_decode_what_decode_does(noisy):
    """The real reference is decoded a batch at a time (data.LazyImages): the same pixels as ImageSet.decode."""
    from taxadiffusion.metrics.data import read_real

    shards, _, _ = noisy
    real = read_real(shards, ["test"], LEVELS)
    idx = [3, 0, 7, 5]
    lazy = real.lazy(idx, (24, 24))
    full = real.decode(idx, (24, 24))
    assert len(lazy) == 4 and np.array_equal(lazy[1:3], full[1:3]) and np.array_equal(lazy[[2, 0, 2]], full[[2, 0, 2]])
    assert lazy[np.zeros(0, int)].shape == (0, 24, 24, 3)
