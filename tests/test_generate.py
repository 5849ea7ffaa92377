"""Mass generation and the grid CLI on the tiny base (32 px, 4 steps) with real saved level folders:
the Table S2 plan rule, identical PNG bytes across batch sizes / resume / processes, a SIGKILLed stage
resumed by a two-process run, genus-level generation, and the unknown-taxon error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from PIL import Image

from conftest import REPO
from model_fixtures import LEVELS, TINY_BASE, lineage, make_level_dir, make_prepared
from taxadiffusion.config import params_from_dict
from taxadiffusion.errors import UserError
from taxadiffusion.generate import check_model_dir, generate, main, parse_lineage
from taxadiffusion.plan import NONE, image_seed, make_plan, plan_images, taxon_dirs

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

ROWS = [
    *[(lineage("Aves", "Passeriformes", "Corvidae", "Corvus", e), "test") for e in ("corax", "corone", "monedula")],
    (lineage("Aves", "Passeriformes", "Paridae", "Parus", "major"), "test"),
    (lineage("Aves", "Passeriformes", "Paridae", "Parus", "major"), "test"),  # two images of one species
    (lineage("Reptilia", "Squamata", "Lacertidae", "Lacerta", "viridis"), "test"),
    (lineage("Reptilia", "Squamata", "Lacertidae", "Lacerta", "agilis"), "train"),  # train only: never drawn
]


def params_dict(root: Path, **generate) -> dict:
    # Aves: 4 test species > cap 3 -> 3 species x 1 image (capped); Reptilia: 1 species x 4 -> 7 images
    g = {"batch_size": 7, "max_species_per_class": 3, "images_per_species_capped": 1, "images_per_species": 4,
         "out": str(root / "generated")}
    g.update(generate)
    return {"num_inference_steps": 4, "model": {"pretrained": str(TINY_BASE)}, "generate": g}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    make_prepared(root / "prepared", ROWS)
    make_level_dir(root / "models" / "species", level="species")
    make_level_dir(root / "models" / "genus", level="genus", seed=1)
    return root


def pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def run(root, out, model="species", **generate):
    params = params_from_dict(params_dict(root, **generate))
    return generate_and_read(params, root / "models" / model, root / "prepared", out)


def generate_and_read(params, model, prepared, out):
    summary = generate(params, model, prepared, out)
    return summary, pngs(out)


# ------------------------------------------------------------------------------------------ plan


def synthetic_test_table() -> pd.DataFrame:
    rows = []
    for cls, n_species in (("Big", 6), ("AtCap", 4), ("Small", 3)):
        for s in range(n_species):
            lin = lineage(cls, f"{cls}o", f"{cls}f", f"{cls}g{s % 2}", f"sp{s}")
            rows += [{**lin, "split": "test", "row": len(rows) + 1}] * 2
    rows.append({**lineage("Small", "Smallo", "Smallf", "Smallg0", "trainonly"), "split": "train", "row": 99})
    return pd.DataFrame(rows)


def test_plan_rule_caps_classes_with_more_taxa_than_the_cap():
    table = synthetic_test_table()
    test = table[table["split"] == "test"]
    plan = make_plan(test, LEVELS, "species", 4, 15, 50, seed=0)
    per_class = plan.groupby("class").agg(n=("species", "size"), imgs=("n_images", "unique"), capped=("capped", "all"))
    assert per_class.loc["Big"].tolist() == [4, [15], True]  # 6 species > 4: 4 sampled x 15
    assert per_class.loc["AtCap"].tolist() == [4, [50], False]  # exactly the cap: all, 50 each (SUPP: "more than")
    assert per_class.loc["Small"].tolist() == [3, [50], False]
    assert "Small trainonly" not in set(plan["species"])
    # seeded and order-free: same seed -> same taxa whatever the row order; some other seed picks others
    shuffled = test.sample(frac=1.0, random_state=3)
    assert make_plan(shuffled, LEVELS, "species", 4, 15, 50, seed=0).equals(plan)
    picks = {tuple(make_plan(test, LEVELS, "species", 4, 15, 50, seed=s)["species"]) for s in range(6)}
    assert len(picks) > 1


def test_plan_at_genus_level_and_collision_safe_folders():
    test = synthetic_test_table().query("split == 'test'")
    plan = make_plan(test, LEVELS, "genus", 1, 15, 50, seed=0)
    assert (plan["species"] == NONE).all() and len(plan) == 3  # every class has 2 genera > cap 1 -> 1 genus each
    assert plan.set_index("class")["capped"].to_dict() == {"AtCap": True, "Big": True, "Small": True}
    homonyms = pd.DataFrame({lv: ["C", "C"] for lv in LEVELS[:3]} | {"genus": ["A/b", "A_b"], "species": ["x", "y"]})
    assert taxon_dirs(homonyms, LEVELS, "genus") == ["C/A_b", "C/A_b__2"]
    images = plan_images(plan, LEVELS, "genus", seed=0)
    assert len(images) == 45 and images["path"].str.endswith("/0014.png").sum() == 3  # 3 genera x 15 images


def test_image_seed_is_a_stable_hash():
    assert image_seed(0, "Aves/Corvidae", 3) == image_seed(0, "Aves/Corvidae", 3) == 2047174716
    assert len({image_seed(0, "Aves/Corvidae", i) for i in range(100)}) == 100
    assert image_seed(1, "Aves/Corvidae", 3) != image_seed(0, "Aves/Corvidae", 3)


# ------------------------------------------------------------------------------------------ generation


@pytest.fixture(scope="module")
def reference(world):
    """Batch size 1: every image drawn alone."""
    summary, images = run(world, world / "ref", batch_size=1)
    return summary, images


def test_same_bytes_for_batch_sizes_1_and_7(world, reference):
    summary, ref = reference
    assert summary["images"] == 7 and summary["taxa"] == 4 and summary["capped_classes"] == ["Aves"]
    out = world / "b7"
    _, images = run(world, out, batch_size=7)
    assert len(ref) == 7 and images == ref
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert manifest.columns.tolist() == [*LEVELS, "taxon", "index", "path", "seed", "sampler", "steps", "guidance",
                                         "scale"]
    assert manifest["path"].tolist()[-4:] == [f"Reptilia/Lacerta viridis/{i:04d}.png" for i in range(4)]
    assert (set(manifest["sampler"]), set(manifest["steps"]), set(manifest["scale"])) == ({"pndm"}, {"4"}, {"6.0"})
    assert manifest["seed"].astype(int).tolist()[-1] == image_seed(0, "/".join(ROWS[5][0].values()), 3)
    plan = pd.read_csv(out / "plan.csv")
    assert plan["n_images"].tolist() == [1, 1, 1, 4] and plan["capped"].tolist() == [True, True, True, False]
    assert len({Image.open(out / p).tobytes() for p in manifest["path"]}) == 7  # distinct images
    # resume: delete 3 images, leave a half-written temp file and an image no longer in the plan
    for rel in list(ref)[:3]:
        (out / rel).unlink()
    (out / "Aves" / "Corvus corax" / ".tmp-0000.png.abc").write_bytes(b"\x89PNG truncated")
    (out / "Aves" / "Old species").mkdir()
    (out / "Aves" / "Old species" / "0000.png").write_bytes(b"stale")
    summary, images = run(world, out, batch_size=2)
    assert (summary["pending"], summary["drawn_here"], summary["stale_removed"]) == (3, 3, 1)
    assert images == ref and not (out / "Aves" / "Old species").exists()
    assert not list(out.rglob(".tmp-*"))
    # other settings: the old images are not mixed with new ones
    summary, images = run(world, out, batch_size=7, sampler="ddim")
    assert summary["removed"] == 7 and summary["drawn_here"] == 7
    assert images.keys() == ref.keys() and images != ref


def test_genus_level_generation_and_grid_cli(world):
    out = world / "genus"
    summary, images = run(world, out, model="genus", target_level="genus", images_per_species=2)
    # genera: Aves 2 <= cap 3, Reptilia 1 -> all, 2 images each; folders named by genus
    assert sorted(images) == [f"{g}/{i:04d}.png" for g in ("Aves/Corvus", "Aves/Parus", "Reptilia/Lacerta")
                              for i in range(2)]
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert set(manifest["species"]) == {NONE} and manifest["genus"].tolist()[0] == "Corvus"
    # the person-facing CLI draws the same images for the same lineage and seeds (tile i == image i)
    params = world / "params_genus.yaml"
    params.write_text(json.dumps(params_dict(world, target_level="genus")))
    grid_png = world / "grid.png"
    main(["--lineage", "Reptilia/Squamata/Lacertidae/Lacerta", "-n", "2", "--zoom", "1", "--params", str(params),
          "--model", str(world / "models" / "genus"), "--taxonomy", str(world / "prepared" / "taxonomy.json"),
          "--out", str(grid_png), "--device", "cpu"])
    grid = np.asarray(Image.open(grid_png))
    assert grid.shape == (32, 64, 3)
    for i in range(2):
        tile = np.asarray(Image.open(out / f"Reptilia/Lacerta/{i:04d}.png"))
        assert np.array_equal(grid[:, 32 * i : 32 * (i + 1)], tile)
    # a genus-level model cannot draw species: its species module was never trained
    with pytest.raises(UserError, match="trained down to 'genus' only"):
        check_model_dir(world / "models" / "genus", LEVELS, 4)


def test_unknown_taxon_is_one_line_with_the_closest_names(world, capsys):
    params = world / "params_cli.yaml"
    params.write_text(json.dumps(params_dict(world)))
    with pytest.raises(SystemExit) as exc:
        main(["--lineage", "Aves/Paseriformes/Corvidae", "--params", str(params),
              "--taxonomy", str(world / "prepared" / "taxonomy.json"), "--out", str(world / "x.png")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "no order 'Paseriformes' under class 'Aves'" in err and "closest: Passeriformes" in err
    assert not (world / "x.png").exists()


def test_parse_lineage_epithets_and_names_with_slashes():
    known = [("Actinopteri", "Perciformes/Scorpaenoidei", "Scorpaenidae", "Scorpaenopsis", "Scorpaenopsis obtusa")]
    assert parse_lineage("Actinopteri/Perciformes/Scorpaenoidei/Scorpaenidae/Scorpaenopsis/obtusa", known, LEVELS,
                         "t.json") == list(known[0])
    with pytest.raises(UserError, match=r"no species 'obtuse'.*closest: Scorpaenopsis obtusa"):
        parse_lineage("Actinopteri/Perciformes/Scorpaenoidei/Scorpaenidae/Scorpaenopsis/obtuse", known, LEVELS, "t")


# ------------------------------------------------------------------------------------------ the stage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stage_two_processes_killed_then_resumed(world, reference, tmp_path):
    """The stage under torchrun (2 CPU ranks) is SIGKILLed mid-run: only complete PNGs remain, and the
    resumed run draws just the missing images, byte-identical to the batch-1 reference."""
    out = tmp_path / "out"
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(params_dict(world, batch_size=1, out=str(out))))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "stages" / "generate.py"), "--params", str(params), "--model", str(world / "models" / "species"),
           "--prepared", str(world / "prepared")]
    log = tmp_path / "killed.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=sink, stderr=sink)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(list(out.rglob("*.png"))) < 3:
            time.sleep(0.05)
    finally:
        # torchrun starts each rank in its own session: SIGKILL the ranks by pid, then torchrun itself
        ranks = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        for p in [*ranks, proc]:
            p.kill()
        psutil.wait_procs(ranks, timeout=30)
        proc.wait()
    done = list(out.rglob("*.png"))
    text = log.read_text()
    assert 3 <= len(done) < 7 and not (out / "manifest.csv").exists(), text[-2000:]
    assert "(rank 0/2)" in text and "| 0.0/4 [" in text  # two ranks; rank 0 took 4 of the 7 images
    for path in done:
        Image.open(path).load()  # complete images only
    summary, images = generate_and_read(params_from_dict(json.loads(params.read_text())), world / "models" / "species",
                                        world / "prepared", out)
    assert (summary["removed"], summary["pending"], summary["drawn_here"]) == (0, 7 - len(done), 7 - len(done))
    assert images == reference[1]
    assert len(pd.read_csv(out / "manifest.csv")) == 7
