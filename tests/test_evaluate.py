"""The `evaluate` stage end to end on tiny shards + fake generated images: outputs, small-sample flags, the
real-feature cache, every backbone from local files, and the missing-weights error."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers.metrics_world import (
    LEVELS,
    metrics_params,
    trained_world,
    write_generated,
    write_params_yaml,
    write_shards,
)
from helpers.stages import run_repo_stage, run_stage_here

from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate

REPO = Path(__file__).resolve().parents[1]
os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return trained_world(tmp_path_factory.mktemp("world"))


def test_evaluate_stage_cli(world, tmp_path):
    root, shards, gen, probe = world
    params = write_params_yaml(tmp_path, min_images_for_fid=7)  # Reptilia: 6 real test images -> flagged
    out = tmp_path / "metrics"
    proc = run_repo_stage("evaluate.py", "--params", params, "--shards", shards, "--generated", gen, "--probe", probe,
                     "--out", out, "--cache", tmp_path / "features", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["per_class"]) == {"Aves", "Reptilia"} and list(summary["backbones"]) == ["probe"]
    aves, rept = summary["per_class"]["Aves"], summary["per_class"]["Reptilia"]
    assert (aves["n_generated"], aves["n_species"], aves["images_per_species"], aves["n_real"]) == (12, 3, 4, 9)
    assert aves["fid_small_sample"] is False and rept["fid_small_sample"] is True
    assert aves["probe"]["fid"] >= 0 and aves["probe"]["pairs"] == 12 and aves["probe"]["acc"]["class"] == 1.0
    assert summary["overall"]["probe"]["acc"]["class"] == 1.0 and summary["overall"]["probe"]["fid"] >= 0
    level = summary["per_level"]["species"]
    assert level["n_taxa"] == 5 and level["probe"]["n_taxa_fid"] == 5

    table = pd.read_csv(out / "class_metrics.csv")
    assert list(table["Class name"]) == ["Aves", "Reptilia"]  # Table S2 order: most generated first
    for col in ["# generated images", "# species", "images per species", "FID (probe)", "1-cos (probe)",
                *(f"Acc {lv} (probe)" for lv in LEVELS)]:
        assert col in table.columns, col
    md = (out / "class_metrics.md").read_text().splitlines()
    aves_row = next(r for r in md if r.startswith("| Aves"))
    rept_row = next(r for r in md if r.startswith("| Reptilia"))
    assert "†" in rept_row and "†" not in aves_row
    assert pd.read_csv(out / "level_metrics.csv")["Level"].tolist() == LEVELS
    assert "| species |" in (out / "level_metrics.md").read_text()
    assert pd.read_csv(out / "plots" / "class_fid.csv").columns.tolist() == ["class", "fid_probe"]
    assert {p.name for p in (out / "plots" / "grids").glob("*.png")} == {"Aves.png", "Reptilia.png"}
    # the per-class metrics files (metrics/<evaluate.group_level>/): one per class + all classes, same keys,
    # numbers from summary.json
    rows = {p.name: json.loads(p.read_text()) for p in (out / "class").iterdir()}
    assert set(rows) == {"Aves.json", "Reptilia.json", "all.json"}
    assert len({json.dumps(_keys(r)) for r in rows.values()}) == 1
    assert rows["Aves.json"]["probe"]["acc"] == aves["probe"]["acc"] and rows["Aves.json"]["images"] == 12
    assert rows["Reptilia.json"]["fid_small_sample"] is True and rows["all.json"]["images"] == 12 + rept["n_generated"]
    assert rows["all.json"]["probe"]["fid"] == summary["overall"]["probe"]["fid"]
    # accuracy by rarity: every species has 6 training images, so all 20 images are in bucket 6-20
    rarity = summary["overall"]["probe"]["acc_by_rarity"]
    assert list(rarity) == ["1-2", "3-5", "6-20", ">20"]
    assert (rarity["6-20"]["n_species"], rarity["6-20"]["n_images"]) == (5, 20)
    assert rarity["6-20"]["acc"] == summary["overall"]["probe"]["acc"] and rarity["6-20"]["train_images"] == [6, 20]
    assert rarity["1-2"]["n_images"] == 0 and rarity["1-2"]["acc"]["species"] is None
    table = pd.read_csv(out / "rarity_metrics.csv")
    assert table["Training images per species"].tolist() == ["1-2", "3-5", "6-20", ">20"]
    assert table.columns.tolist()[:3] == ["Training images per species", "# species", "# generated images"]
    assert "| 6-20 | 5 | 20 | 1.000 |" in (out / "rarity_metrics.md").read_text()
    # the ceiling: the same probe on the real test images, split the same way
    real_rarity = summary["overall"]["probe"]["real_acc_by_rarity"]
    n_real = summary["data"]["n_real"]
    assert real_rarity["6-20"]["n_images"] == n_real and real_rarity["1-2"]["n_images"] == 0
    assert real_rarity["6-20"]["acc"]["species"] == summary["overall"]["probe"]["real_test_acc"]["species"]
    assert table.columns.tolist()[-3:] == ["# real images", "Real acc genus (probe)", "Real acc species (probe)"]
    assert table.set_index("Training images per species").loc["6-20", "# real images"] == n_real


def test_class_metrics_folder_is_replaced_whole(tmp_path):
    """A class of an earlier run (another dataset) must not survive as a stale metrics row."""
    from taxadiffusion.metrics.tables import write_class_metrics

    entry = {"n_generated": 2, "n_species": 1, "n_real": 3, "fid_small_sample": True,
             "probe": {"fid": 1.0, "dist": 0.1, "pairs": 2, "acc": {"class": 1.0}}}
    summary = {"backbones": {"probe": {"metric": "Fréchet distance"}},
               "data": {"n_generated": 2, "n_real": 3, "min_images_for_fid": 50, "generation": {"scale": ["6.0"]}},
               "overall": {"probe": {"fid": 1.0, "dist": 0.1, "acc": {"class": 1.0}}},
               "per_class": {"Old class/x": entry}}
    write_class_metrics(summary, tmp_path / "classes")
    # taxadiffusion/core/names.py: an unsafe name -> its readable part + "-" + 10 hex digits of its sha256
    old = f"Old class_x-{hashlib.sha256('Old class/x'.encode()).hexdigest()[:10]}.json"
    assert sorted(p.name for p in (tmp_path / "classes").iterdir()) == [old, "all.json"]
    summary["per_class"] = {"New": entry}
    write_class_metrics(summary, tmp_path / "classes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes"]  # no temp folders left behind
    assert sorted(p.name for p in (tmp_path / "classes").iterdir()) == ["New.json", "all.json"]
    row = json.loads((tmp_path / "classes" / "New.json").read_text())
    assert row["scale"] == 6.0 and row["probe"] == {"fid": 1.0, "dist": 0.1, "acc": {"class": 1.0}}


def _keys(tree: dict, prefix: str = "") -> list[str]:
    return sorted(k for key, v in tree.items()
                  for k in (_keys(v, f"{prefix}{key}.") if isinstance(v, dict) else [prefix + key]))


def test_second_run_reuses_real_features(world, tmp_path, caplog):
    root, shards, gen, probe = world
    cfg, cache = metrics_params().evaluate, tmp_path / "features"
    with caplog.at_level(logging.INFO):
        first = evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / "m1", cache))
    assert caplog.text.count("cache miss: probe/") == 2 and "cache hit" not in caplog.text
    cached = sorted((tmp_path / "features" / "probe").glob("*.npz"))
    assert len(cached) == 2

    new_gen = write_generated(tmp_path, seed=99)  # only the generated images change
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = evaluate(cfg, LEVELS, EvaluatePaths(shards, new_gen, probe, tmp_path / "m2", cache))
    assert caplog.text.count("cache hit: probe/") == 2 and "cache miss" not in caplog.text
    assert sorted((tmp_path / "features" / "probe").glob("*.npz")) == cached
    assert second["per_class"]["Aves"]["probe"]["fid"] != first["per_class"]["Aves"]["probe"]["fid"]

    changed = write_shards(tmp_path / "other", n_test=4)  # new real data -> recomputed
    caplog.clear()
    with caplog.at_level(logging.INFO):
        evaluate(cfg, LEVELS, EvaluatePaths(changed, new_gen, probe, tmp_path / "m3", cache))
    assert caplog.text.count("cache miss: probe/") == 2


def test_all_backbones_from_local_files(world, tmp_path):
    from helpers.backbones import write_random_alexnet, write_random_inception, write_tiny_clip

    root, shards, _, probe = world
    gen = write_generated(tmp_path, n=2, skip=("Corvus monedula", "Boa imperator"))  # fewer Inception forwards
    params = metrics_params(
        backbones=["inception", "alex", "bioclip", "probe"], lpips_net="alex",
        inception_weights=str(write_random_inception(tmp_path / "inception.pth")),
        lpips_weights=str(write_random_alexnet(tmp_path / "alexnet.pth")),
        bioclip_model=f"local-dir:{write_tiny_clip(tmp_path / 'clip')}",
    )
    summary = evaluate(params.evaluate, params.level_names,
                       EvaluatePaths(shards, gen, probe, tmp_path / "metrics", tmp_path / "features"))
    assert set(summary["backbones"]) == {"probe", "inception", "alex", "bioclip-v1"}
    assert summary["backbones"]["inception"]["resize"].startswith("tf1-bilinear")
    aves = summary["per_class"]["Aves"]
    assert aves["n_generated"] == 4 and aves["n_real"] == 9  # real: every species of the class
    assert aves["inception"]["fid"] is not None and aves["alex"]["pairs"] == 4 and aves["alex"]["lpips"] > 0
    assert -100 <= aves["bioclip-v1"]["score"] <= 100
    table = pd.read_csv(tmp_path / "metrics" / "class_metrics.csv")
    assert {"FID (inception)", "LPIPS (alex)", "BioCLIP (bioclip-v1)", "FID (probe)"} <= set(table.columns)
    levels = pd.read_csv(tmp_path / "metrics" / "level_metrics.csv")
    assert levels["BioCLIP (bioclip-v1)"].notna().all()


def test_missing_weights_fail_the_stage_in_one_line(world, tmp_path, monkeypatch, capsys):
    root, shards, gen, probe = world
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached, HF_HUB_OFFLINE=1
    params = write_params_yaml(tmp_path, backbones=["probe", "inception"])
    code, err = run_stage_here("evaluate.py", "--params", params, "--shards", shards, "--generated", gen,
                               "--probe", probe, "--out", tmp_path / "metrics", "--cache", tmp_path / "features",
                               monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: evaluate.inception_weights: Inception weights not found")
    assert "Traceback" not in err and not (tmp_path / "metrics").exists()


def test_generated_class_without_real_images_is_reported_not_dropped(world, tmp_path):
    root, shards, _, probe = world
    gen = write_generated(tmp_path, n=2)
    manifest = pd.read_csv(gen / "manifest.csv")
    extra = manifest.iloc[:2].copy()
    extra[LEVELS] = ["Mammalia", "Rodentia", "Muridae", "Mus", "Mus musculus"]
    pd.concat([manifest, extra]).to_csv(gen / "manifest.csv", index=False)
    summary = evaluate(metrics_params().evaluate, LEVELS,
                       EvaluatePaths(shards, gen, probe, tmp_path / "metrics", tmp_path / "features"))
    mammals = summary["per_class"]["Mammalia"]
    assert mammals["n_real"] == 0 and mammals["probe"]["fid"] is None and mammals["probe"]["dist"] is None
    assert mammals["probe"]["unseen"]["class"] == 2 and mammals["fid_small_sample"] is True
    assert summary["data"]["classes_without_real_images"] == ["Mammalia"]
    assert summary["overall"]["probe"]["unseen"]["class"] == 2  # counted, not silently scored
    assert "| Mammalia | 2 | 1 | 2 | 0 | – |" in (tmp_path / "metrics" / "class_metrics.md").read_text()


def _uneven_shards(root, n_train: dict, per_shard: int = 4):
    """Train shards (several tar files) with ``n_train[species]`` images per species, in the shard layout."""
    import webdataset as wds
    from helpers.metrics_world import WORLD, draw, png

    shards = root / "shards"
    (shards / "train").mkdir(parents=True)
    samples = [(lin, i) for lin in WORLD for i in range(n_train.get(lin[-1], 0))]
    names = []
    for k in range(0, len(samples), per_shard):
        names.append(f"train/shard-{k // per_shard:06d}.tar")
        with wds.TarWriter(str(shards / names[-1])) as sink:
            for key, (lin, i) in enumerate(samples[k:k + per_shard], start=k):
                meta = {"lineage": dict(zip(LEVELS, lin)), "row": key + 1, "path": f"{key}.png"}
                sink.write({"__key__": f"{key:09d}", "png": png(draw(lin, i)), "json": json.dumps(meta).encode()})
    index = {"levels": LEVELS, "resolution": 16, "train": {"shards": names, "count": len(samples)},
             "test": {"shards": [], "count": 0}}
    (shards / "index.json").write_text(json.dumps(index))
    return shards


def test_accuracy_by_rarity_buckets(tmp_path):
    """Buckets 1-2, 3-5, 6-20, >20 by the drawn species' training images (train split only); bucket 0 only
    when a generated species has none; accuracy per level over the bucket's images, unseen labels not scored."""
    import numpy as np
    from helpers.metrics_world import WORLD

    from taxadiffusion.core.errors import UserError
    from taxadiffusion.metrics.rarity import acc_by_rarity, bucket_of, drawn_taxon, train_counts

    assert [bucket_of(n) for n in (0, 1, 2, 3, 5, 6, 20, 21, 10**6)] == \
        ["0", "1-2", "1-2", "3-5", "3-5", "6-20", "6-20", ">20", ">20"]
    assert drawn_taxon(("Aves", "Passeriformes", "None", "None", "None")) == ("Aves", "Passeriformes")
    n_train = {"Corvus corax": 1, "Corvus monedula": 2, "Parus major": 4, "Boa constrictor": 21}  # imperator: none
    counts = train_counts(_uneven_shards(tmp_path, n_train), LEVELS)
    assert counts[WORLD[0]] == 1 and counts[("Aves",)] == 7 and counts[("Reptilia",)] == 21
    assert counts[WORLD[4]] == 0

    lineages = [lin for lin in WORLD for _ in range(2)]  # 2 generated images per species
    labels = np.array([[0, 0, 0, 0, s] for s in range(5) for _ in range(2)])
    labels[8:, 4] = -1  # Boa imperator: a species the probe never saw
    pred = labels.copy()
    pred[[1, 3], 4] = 99  # one wrong species in 1-2 (corax, monedula), ...
    pred[6, 0] = 99  # ... one wrong class in >20 (Boa constrictor)
    out = acc_by_rarity(pred, labels, lineages, counts, LEVELS)
    assert list(out) == ["1-2", "3-5", "6-20", ">20", "0"]
    assert (out["1-2"]["n_species"], out["1-2"]["n_images"]) == (2, 4) and out["1-2"]["acc"]["species"] == 0.5
    assert out["1-2"]["acc"]["class"] == 1.0 and out["3-5"]["acc"]["species"] == 1.0
    assert out["6-20"]["n_images"] == 0 and out["6-20"]["acc"]["class"] is None
    assert out[">20"]["acc"]["class"] == 0.5 and out[">20"]["train_images"] == [21, None]
    assert out["0"]["n_images"] == 2 and out["0"]["acc"]["species"] is None and out["0"]["acc"]["class"] == 1.0

    (tmp_path / "shards" / "train" / "shard-000000.tar").write_bytes(b"not a tar")
    with pytest.raises(UserError, match=r"shard-000000.tar: cannot read train shard"):
        train_counts(tmp_path / "shards", LEVELS)


def test_the_headline_file_is_the_pooled_row_and_the_only_dvc_metrics(world, tmp_path):
    """`dvc exp show` had a column per class and key (214 in all): only the pooled row is declared as metrics now;
    the per-class rows stay files (metrics/class, `dvc metrics show metrics/class`: evaluate.group_level)."""
    import yaml

    root, shards, gen, probe = world
    out = tmp_path / "metrics"
    evaluate(metrics_params().evaluate, LEVELS, EvaluatePaths(shards=shards, generated=gen, probe=probe, out=out,
                                                            cache=tmp_path / "features"))
    assert (out / "headline.json").read_text() == (out / "class" / "all.json").read_text()
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]
    assert stage["metrics"] == [{"metrics/headline.json": {"cache": False}}]
    assert {"metrics/${evaluate.group_level}": {"cache": False}} in stage["outs"]


def test_group_level_sets_the_rows_heading_and_files(world, tmp_path):
    """evaluate.group_level (Table S2: class) names what the per-group table's rows are: here the families of the
    tiny world (Corvidae, Paridae in Aves; Boidae in Reptilia), through the stage's entry point."""
    root, shards, gen, probe = world
    out = tmp_path / "metrics"
    proc = run_repo_stage("evaluate.py", "--params", write_params_yaml(tmp_path, group_level="family"),
                          "--shards", shards, "--generated", gen, "--probe", probe, "--out", out,
                          "--cache", tmp_path / "features", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["group_level"] == "family"
    assert set(summary["per_class"]) == {"Boidae", "Corvidae", "Paridae"}
    corvidae = summary["per_class"]["Corvidae"]
    assert (corvidae["n_generated"], corvidae["n_species"], corvidae["n_real"]) == (8, 2, 6)
    assert corvidae["capped"] is False and corvidae["probe"]["pairs"] == 8
    table = pd.read_csv(out / "family_metrics.csv")
    assert table.columns[0] == "Family name" and "Class name" not in table.columns
    assert list(table["Family name"]) == ["Boidae", "Corvidae", "Paridae"]  # most generated, then by name
    assert (out / "family_metrics.md").read_text().startswith("| Family name | # generated images |")
    assert "Rows: the taxa of family (evaluate.group_level)" in (out / "family_metrics.md").read_text()
    assert sorted(p.name for p in (out / "family").iterdir()) == ["Boidae.json", "Corvidae.json", "Paridae.json",
                                                                  "all.json"]
    assert (out / "headline.json").read_text() == (out / "family" / "all.json").read_text()
    assert not (out / "class").exists() and not (out / "class_metrics.csv").exists()
    assert pd.read_csv(out / "plots" / "family_fid.csv").columns.tolist() == ["family", "fid_probe"]
    assert {p.name for p in (out / "plots" / "grids").glob("*.png")} == {"Boidae.png", "Corvidae.png", "Paridae.png"}
    # what does not group: the per-level table and the pooled row
    assert pd.read_csv(out / "level_metrics.csv")["Level"].tolist() == LEVELS
    assert summary["overall"]["probe"]["acc"]["class"] == 1.0
