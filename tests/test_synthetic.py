"""The synthetic taxonomy world: determinism, skew, sibling traits, captions, and the stage."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.params import params_dict, section

from taxadiffusion.config import SynthesizeConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.data import animals as A
from taxadiffusion.data import synthesize as S

REPO = Path(__file__).resolve().parents[1]


def _small_cfg(seed: int = 0) -> SynthesizeConfig:
    # images_per_species [1, 3] keeps the full write (~130 PNGs) well under a second or two.
    return section("synthesize", {"seed": seed, "image_size": 32, "n_classes": 4, "images_per_species": [1, 3]})


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_dataset_is_byte_identical_for_a_seed(tmp_path):
    a = S.write_dataset(_small_cfg(0), tmp_path / "a")
    b = S.write_dataset(_small_cfg(0), tmp_path / "b")
    assert a == b
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and len(da) == a["images"] + 2
    assert not any(name.startswith(".tmp") for name in da)


def test_rewrite_replaces_stale_images(tmp_path):
    S.write_dataset(_small_cfg(0), tmp_path / "out")
    stale = tmp_path / "out" / "images" / "Stale" / "x.png"
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    S.write_dataset(_small_cfg(0), tmp_path / "out")
    assert not stale.exists()


def test_different_seed_gives_different_tree():
    w0, w1 = S.build_world(0, 4), S.build_world(1, 4)
    assert [sp.lineage for sp in w0.species] != [sp.lineage for sp in w1.species]
    assert [sp.lineage for sp in w0.species] == [sp.lineage for sp in S.build_world(0, 4).species]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_world_is_skewed_like_real_data(seed):
    w = S.build_world(seed, 4, (1, 60))
    per_class = Counter(sp.lineage["class"] for sp in w.species)
    assert len(per_class) == 4
    assert max(per_class.values()) >= 20
    assert 5 in per_class.values()
    assert 35 <= len(w.species) <= 60
    counts = [sp.n_images for sp in w.species]
    assert min(counts) >= 1 and max(counts) <= 60
    assert sum(c <= 5 for c in counts) >= 3
    assert 1100 <= sum(counts) <= 2000


@pytest.mark.parametrize("seed", [0, 5])
def test_names_unique_per_level_and_binomial(seed):
    w = S.build_world(seed, 4)
    parent_of: dict[tuple, str] = {}
    for sp in w.species:
        lin = sp.lineage
        genus, epithet = lin["species"].split(" ")
        assert genus == lin["genus"] and epithet.islower()
        assert lin["order"].endswith("iformes") and lin["family"].endswith("idae")
        assert lin["class"].endswith(("i", "ia"))
        for parent, child in zip(S.LEVELS, S.LEVELS[1:]):
            # a name at one level belongs to exactly one parent (no reuse across branches)
            assert parent_of.setdefault((child, lin[child]), lin[parent]) == lin[parent]
    assert len({sp.name for sp in w.species}) == len(w.species)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sibling_traits_are_distinct_and_inherited(seed):
    w = S.build_world(seed, 4)
    adds = {"class": "body", "order": "palette", "family": "pattern", "genus": "tail", "species": "mark"}
    # every taxon's own trait is shared by all its descendants
    for i, lv in enumerate(S.LEVELS):
        seen: dict[tuple, object] = {}
        for sp in w.species:
            key = tuple(sp.lineage[x] for x in S.LEVELS[: i + 1])
            assert seen.setdefault(key, sp.traits[adds[lv]]) == sp.traits[adds[lv]]
        # siblings (same parent) differ in the trait their level adds
        by_parent = defaultdict(list)
        for key, trait in seen.items():
            by_parent[key[:-1]].append(trait)
        for traits in by_parent.values():
            assert len(traits) == len(set(traits)), (lv, traits)
    for sp in w.species:  # marks stay visible on their palette
        assert sp.traits["mark"] in A.marks_for_palette(sp.traits["palette"])


def test_bad_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="synthesize.n_classes"):
        S.build_world(0, 99)
    with pytest.raises(UserError, match="synthesize.images_per_species"):
        S.build_world(0, 4, (10, 2))
    with pytest.raises(UserError, match=r"synthesize.image_size=2: expected an integer >= 8"):
        section("synthesize", {"image_size": 2})  # checked when the section is built
    with pytest.raises(UserError, match=r"synthesize.images_per_species=\[10, 2\]: expected \[min, max\]"):
        section("synthesize", {"images_per_species": [10, 2]})


def test_render_is_rgb_and_deterministic():
    traits = S.build_world(0, 4).species[0].traits
    a = A.render(traits, S.image_rng(0, 0, 0))
    b = A.render(traits, S.image_rng(0, 0, 0))
    c = A.render(traits, S.image_rng(0, 0, 1))
    assert a.mode == "RGB" and a.size == (32, 32)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    arr = np.asarray(a).astype(int)
    # the background is a smooth gradient (corners), the animal is not background
    assert np.abs(np.diff(arr[:3, :3], axis=1)).max() <= 12
    assert np.abs(arr - arr[0, 0]).sum(-1).max() > 150
    assert A.render(traits, S.image_rng(0, 0, 0), size=48).size == (48, 48)
    rng = np.random.default_rng(0)
    for _ in range(50):  # any trait combination renders (its speed: benchmarks/bench_quick.py)
        assert A.render(A.random_traits(rng), rng).size == (32, 32)


def test_palettes_are_visible_in_the_image():
    # The order trait must survive 32 px: the dominant non-background colour is the palette's.
    base = {"body": "round", "pattern": "plain", "tail": "rounded"}
    for name, (main, _) in A.PALETTES.items():
        traits = {**base, "palette": name, "mark": A.marks_for_palette(name)[0]}
        arr = np.asarray(A.render(traits, S.image_rng(3, 0, 0))).reshape(-1, 3).astype(float)
        d = np.linalg.norm(arr - np.array(main), axis=1)
        assert (d < 40).sum() >= 40, name


def test_captions():
    traits = {"body": "long", "palette": "red", "pattern": "striped", "tail": "forked", "mark": "white head"}
    assert A.caption(traits) == "a long red striped animal with a forked tail and a white head spot"
    assert A.caption({**traits, "body": "round", "palette": "orange", "mark": "yellow eye"}) == (
        "a round orange striped animal with a forked tail and yellow eyes"
    )
    rng = np.random.default_rng(0)
    dropped = [A.caption(traits, rng, drop_prob=0.5) for _ in range(200)]
    assert any("red" not in c for c in dropped) and any("red" in c for c in dropped)
    assert "an animal" in dropped
    vocab = set(A.pretraining_vocabulary())
    for sp in S.build_world(0, 4).species:
        text = A.caption(sp.traits)
        assert sp.traits["palette"] in text.split() and sp.traits["pattern"] in text.split()
        assert set(text.split()) <= vocab


def test_pretraining_batch():
    imgs, caps = A.sample_pretraining_batch(60, np.random.default_rng(0))
    assert imgs.shape == (60, 32, 32, 3) and imgs.dtype == np.uint8
    assert len(caps) == 60 and "" in caps
    vocab = set(A.pretraining_vocabulary())
    assert all(set(c.split()) <= vocab for c in caps)
    assert len(set(caps)) > 30  # independent random combinations, not one tree


def test_stage_entry_point(tmp_path):
    params = params_dict({"synthesize": {"seed": 3, "image_size": 32, "n_classes": 2, "images_per_species": [1, 2]}})
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))  # sorted keys would list the levels alphabetically
    stage = [sys.executable, "stages/synthesize.py", "--params", str(pfile), "--out", str(tmp_path / "syn")]
    res = subprocess.run(stage, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "syn"
    with open(out / "annotations.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "class", "order", "family", "genus", "species"]
    assert len(rows) > 1
    for row in rows[1:]:
        assert (out / "images" / row[0]).is_file()
        assert row[0].split("/")[0] == row[1]
    world = json.loads((out / "world.json").read_text())
    assert len(world["tree"]) == 2 and world["levels"] == S.LEVELS

    params["synthesize"]["n_classes"] = 50
    pfile.write_text(yaml.safe_dump(params, sort_keys=False))
    res = subprocess.run(stage, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "synthesize.n_classes" in res.stderr
    assert "Traceback" not in res.stderr
