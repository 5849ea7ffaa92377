"""Mass generation and the grid CLI on the tiny base (32 px, 4 steps) with real saved level folders:
the Table S2 plan rule, identical PNG bytes across batch sizes / resume / processes, a SIGKILLed stage
resumed by a two-process run, genus-level generation, the unknown-taxon error, and the output folder's
safety: a damaged model never costs the old images, one writer per folder, damaged PNGs are redrawn."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from helpers.models import LEVELS, TINY_BASE, lineage, make_level_dir, make_prepared
from helpers.params import REPO, params_dict
from helpers.stages import free_port
from PIL import Image

from taxadiffusion.config import params_from_dict
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.lineage import NONE, image_seed
from taxadiffusion.models.level import check_level_dir
from taxadiffusion.sampling.draw import main, parse_lineage
from taxadiffusion.sampling.generate import (
    LOCK_FILE,
    SETTINGS_FILE,
    PngWriter,
    generate,
    output_lock,
    png_is_complete,
)
from taxadiffusion.sampling.plan import PlanRule, make_plan, plan_images, taxon_dirs

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

ROWS = [
    *[(lineage("Aves", "Passeriformes", "Corvidae", "Corvus", e), "test") for e in ("corax", "corone", "monedula")],
    (lineage("Aves", "Passeriformes", "Paridae", "Parus", "major"), "test"),
    (lineage("Aves", "Passeriformes", "Paridae", "Parus", "major"), "test"),  # two images of one species
    (lineage("Reptilia", "Squamata", "Lacertidae", "Lacerta", "viridis"), "test"),
    (lineage("Reptilia", "Squamata", "Lacertidae", "Lacerta", "agilis"), "train"),  # train only: never drawn
]


def gen_params(**generate) -> dict:
    """params.yaml with a small plan: Aves has 4 test species > cap 3 -> 3 species x 1 image (capped);
    Reptilia 1 species x 4 -> 7 images; PNDM, 4 steps, TaxaGuide scale 6."""
    g = {"sampler": "pndm", "guidance": "taxaguide", "batch_size": 7, "max_species_per_class": 3,
         "images_per_species_capped": 1, "images_per_species": 4, "target_level": "species"}
    g.update(generate)
    return params_dict({"seed": 0, "num_inference_steps": 4, "guidance_scale": 6.0,
                        "model.pretrained": str(TINY_BASE), "generate": g})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    make_prepared(root / "prepared", ROWS)
    make_level_dir(root / "models" / "species", level="species")
    make_level_dir(root / "models" / "genus", level="genus", seed=1)
    return root


def pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def run(root, out, model="species", model_dir=None, **generate):
    params = params_from_dict(gen_params(**generate))
    return generate_and_read(params, model_dir or root / "models" / model, root / "prepared", out)


def generate_and_read(params, model, prepared, out):
    """What stages/generate.py passes: the sections and plain values, not the whole Params."""
    summary = generate(params.generate, params.sampling, params.experiment, model, prepared, out)
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
    plan = make_plan(test, LEVELS, PlanRule("species", 4, 15, 50), seed=0)
    per_class = plan.groupby("class").agg(n=("species", "size"), imgs=("n_images", "unique"), capped=("capped", "all"))
    assert per_class.loc["Big"].tolist() == [4, [15], True]  # 6 species > 4: 4 sampled x 15
    assert per_class.loc["AtCap"].tolist() == [4, [50], False]  # exactly the cap: all, 50 each (SUPP: "more than")
    assert per_class.loc["Small"].tolist() == [3, [50], False]
    assert "Small trainonly" not in set(plan["species"])
    # seeded and order-free: same seed -> same taxa whatever the row order; some other seed picks others
    shuffled = test.sample(frac=1.0, random_state=3)
    assert make_plan(shuffled, LEVELS, PlanRule("species", 4, 15, 50), seed=0).equals(plan)
    picks = {tuple(make_plan(test, LEVELS, PlanRule("species", 4, 15, 50), seed=s)["species"]) for s in range(6)}
    assert len(picks) > 1


def test_plan_at_genus_level_and_collision_safe_folders():
    test = synthetic_test_table().query("split == 'test'")
    plan = make_plan(test, LEVELS, PlanRule("genus", 1, 15, 50), seed=0)
    assert (plan["species"] == NONE).all() and len(plan) == 3  # every class has 2 genera > cap 1 -> 1 genus each
    assert plan.set_index("class")["capped"].to_dict() == {"AtCap": True, "Big": True, "Small": True}
    homonyms = pd.DataFrame({lv: ["C", "C"] for lv in LEVELS[:3]} | {"genus": ["A/b", "A_b"], "species": ["x", "y"]})
    unsafe, safe = taxon_dirs(homonyms, LEVELS, "genus")  # names.py: a safe name is kept, an unsafe one hashed
    assert safe == "C/A_b" and unsafe.startswith("C/A_b-") and len(unsafe) == len("C/A_b-") + 10
    images = plan_images(plan, LEVELS, "genus", seed=0)
    assert len(images) == 45 and images["path"].str.endswith("/0014.png").sum() == 3  # 3 genera x 15 images


def test_image_seed_is_a_stable_hash():
    assert image_seed(0, "Aves/Corvidae", 3) == image_seed(0, "Aves/Corvidae", 3) == 2047174716
    assert len({image_seed(0, "Aves/Corvidae", i) for i in range(100)}) == 100
    assert image_seed(1, "Aves/Corvidae", 3) != image_seed(0, "Aves/Corvidae", 3)


# ------------------------------------------------------------------------------------------ generation


@pytest.fixture(scope="module")
def reference(world):
    """Batch size 1: every image drawn alone (about 20 s on 2 cores: its tests are marked slow)."""
    summary, images = run(world, world / "ref", batch_size=1)
    return summary, images


@pytest.mark.slow
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
    # resume: delete 3 images, damage 2 (truncated; one flipped byte), leave a half-written temp file and an
    # image no longer in the plan
    names = list(ref)
    for rel in names[:3]:
        (out / rel).unlink()
    (out / names[3]).write_bytes(ref[names[3]][: len(ref[names[3]]) // 2])
    flipped = bytearray(ref[names[4]])
    flipped[len(flipped) // 2] ^= 0xFF
    (out / names[4]).write_bytes(bytes(flipped))
    (out / "Aves" / "Corvus corax" / ".tmp-0000.png.abc").write_bytes(b"\x89PNG truncated")
    (out / "Aves" / "Old species").mkdir()
    (out / "Aves" / "Old species" / "0000.png").write_bytes(b"stale")
    summary, images = run(world, out, batch_size=2)
    assert (summary["broken_removed"], summary["pending"], summary["drawn_here"], summary["stale_removed"]) == (
        2, 5, 5, 1)
    assert images == ref and not (out / "Aves" / "Old species").exists()
    assert not list(out.rglob(".tmp-*")) and not (out / LOCK_FILE).exists()
    settings = json.loads((out / SETTINGS_FILE).read_text())
    assert (settings["seed"], settings["settings"]) == (0, {"sampler": "pndm", "steps": 4, "scale": 6.0,
                                                            "guidance": "taxaguide", "guidance_range": [0.0, 1.0],
                                                            "dtype": "fp32"})
    # other settings: the old images are not mixed with new ones
    summary, images = run(world, out, batch_size=7, sampler="ddim")
    assert summary["removed"] == 7 and summary["drawn_here"] == 7
    assert images.keys() == ref.keys() and images != ref


@pytest.mark.slow
def test_top_level_seed_changes_every_image(world, reference):
    """params.yaml `seed` (what `dvc exp run -S seed=1` sets) reaches every image: new noise for the same
    taxon and index, and (in a class over the cap) possibly other taxa."""
    _, ref = reference
    params = params_from_dict({**gen_params(batch_size=7), "seed": 1})
    out = world / "seed1"
    _, images = generate_and_read(params, world / "models" / "species", world / "prepared", out)
    same = sorted(set(images) & set(ref))
    assert len(images) == len(ref) and [p for p in same if p.startswith("Reptilia/")] == \
        [f"Reptilia/Lacerta viridis/{i:04d}.png" for i in range(4)]
    assert all(images[p] != ref[p] for p in same), "an image did not change with the seed"
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert manifest["seed"].astype(int).tolist()[-1] == image_seed(1, "/".join(ROWS[5][0].values()), 3)


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
    params.write_text(json.dumps(gen_params(target_level="genus")))
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
        check_level_dir(world / "models" / "genus", LEVELS, 4)


def test_unknown_taxon_is_one_line_with_the_closest_names(world, capsys):
    params = world / "params_cli.yaml"
    params.write_text(json.dumps(gen_params()))
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


# ------------------------------------------------------------------------------------------ the output folder


@pytest.mark.slow
def test_a_damaged_model_does_not_cost_the_old_images(world, reference, tmp_path):
    """New model files change the fingerprint, which removes the old images: the new model is loaded and
    checked first, so a truncated condition.safetensors stops the run with the old images intact."""
    out = tmp_path / "out"
    shutil.copytree(world / "ref", out)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    model = shutil.copytree(world / "models" / "species", tmp_path / "species")
    weights = model / "condition.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError) as exc:
        run(world, out, batch_size=1, model_dir=model)
    message = str(exc.value)
    assert len(message.splitlines()) == 1 and str(weights) in message and "unreadable weights" in message
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    (model / "condition.safetensors").unlink()
    with pytest.raises(UserError, match=r"condition\.safetensors: missing from the trained level"):
        run(world, out, batch_size=1, model_dir=model)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


@pytest.mark.slow
def test_one_writer_per_output_folder(world, tmp_path):
    """A second run on a folder another process is writing stops at once, naming the holder's pid, and
    writes nothing; a killed holder's lock is gone with it (its file stays, and is taken over)."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from taxadiffusion.sampling.generate import output_lock\n"
         "with output_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"another generate run \(pid {holder.pid}\) is writing here"):
            run(world, out, batch_size=7)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)  # left by the killed holder, unlocked
    with output_lock(out):  # the kernel released the dead holder's lock; ours replaces its pid
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_FILE).exists()


def test_png_writer_bounds_what_is_in_flight_and_raises_write_errors(tmp_path):
    """The PNGs are written by threads off the sampling loop, at most ``limit`` at a time (memory stays flat); a
    write that fails raises in the sampling thread, and the writes before it are complete images."""
    px = torch.arange(48, dtype=torch.uint8).reshape(4, 4, 3)
    writer = PngWriter(threads=2, limit=3)
    for i in range(10):
        writer.submit(tmp_path / "ok" / f"{i:04d}.png", px)
        assert len(writer.pending) <= 3
    writer.close()
    assert writer.written == 10 and all(png_is_complete(tmp_path / "ok" / f"{i:04d}.png") for i in range(10))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ok" / "0009.png")), px.numpy())
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    writer = PngWriter(threads=1, limit=1)
    with pytest.raises(OSError):
        try:
            for i in range(3):
                writer.submit(blocked / f"{i:04d}.png", px)  # its folder is a file
        finally:
            writer.close()
    assert not list(tmp_path.glob("**/.tmp-*"))


# ------------------------------------------------------------------------------------------ the stage


@pytest.mark.slow
def test_stage_two_processes_killed_then_resumed(world, reference, tmp_path):
    """The stage under torchrun (2 CPU ranks) is SIGKILLed mid-run: only complete PNGs remain, and the
    resumed run draws just the missing images, byte-identical to the batch-1 reference."""
    out = tmp_path / "out"
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(gen_params(batch_size=1)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "stages" / "generate.py"), "--params", str(params), "--model", str(world / "models" / "species"),
           "--prepared", str(world / "prepared"), "--out", str(out)]
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
