"""``prepare``: normalisation, filters with counted reasons, image checks, the split, and the stage script."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers.params import make_params, params_dict
from PIL import Image

from taxadiffusion.core.errors import UserError
from taxadiffusion.data import prepare as P
from taxadiffusion.data import taxon_names as N
from taxadiffusion.data.readers import BIOSCAN_FILENAMES

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures"
LEVELS = ["class", "order", "family", "genus", "species"]
FISH_SYNONYMS = {"class": {"Actinopterygii": "Actinopteri"}}


def _jpeg(path: Path, size=(40, 30), color=(200, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=90)


def _params(dataset: dict, prepare: dict | None = None):
    return make_params({"dataset": dataset, "prepare": {"check_images": "header", **(prepare or {})}})


def _prepare(params, out: Path) -> dict:
    return P.prepare(params.dataset, params.prepare, params.level_names, out, show_progress=False)


def _fishnet_images(root: Path) -> None:
    for name in ["Acanthuridae/Zefla_u2.jpg", "Acanthuridae/Zefla_u3.jpg",
                 "Acanthuridae/3f2b8c1e-6d7a-4b8e-9a1c-2e5f7d9b0a11.jpg", "Scorpaenidae/Scobt_u0.jpg",
                 "Scorpaenidae/Scobt_u1.jpg", "Salmonidae/Satru_u0.jpg", "Salmonidae/Satru_u1.jpg",
                 "Protopteridae/Prann_u0.jpg", "Protopteridae/Prann_u1.jpg", "Myxinidae/Myglu_u0.jpg"]:
        _jpeg(root / name)
    (root / "Salmonidae" / "Satru_bad.jpg").write_bytes(b"this is not a JPEG")
    _jpeg(root.parent / "x.jpg")  # exists, but outside the root: must still be refused


def _fishnet_params(tmp_path: Path, **prepare):
    root = tmp_path / "fish" / "images"
    _fishnet_images(root)
    return _params({"name": "fishnet", "metadata": str(FIX / "fishnet_sample.csv"), "images": str(root),
                    "bbox_json": str(FIX / "fishnet_bbox.json"), "synonyms": FISH_SYNONYMS}, prepare)


def _read_outputs(out: Path):
    return (pd.read_parquet(out / "table.parquet"), json.loads((out / "taxonomy.json").read_text()),
            json.loads((out / "report.json").read_text()))


# ---------------------------------------------------------------------------------------------- FishNet end to end


def test_fishnet_prepare_counts_every_reason_and_writes_the_contract(tmp_path):
    out = tmp_path / "prepared"
    report = _prepare(_fishnet_params(tmp_path), out)
    table, taxonomy, on_disk = _read_outputs(out)
    assert on_disk == json.loads(json.dumps(report))
    assert report["dropped"] == {"missing_species": 1, "missing_class": 1, "duplicate": 1, "missing_image": 1,
                                 "corrupt_image": 1, "path_escapes_root": 1}
    assert report["rows_in"] == 14 and report["rows_kept"] == 8
    assert report["rows_in"] == report["rows_kept"] + sum(report["dropped"].values())
    rows_of = {k: [e["row"] for e in v] for k, v in report["examples"].items()}
    assert rows_of == {"missing_species": [3], "missing_class": [13], "duplicate": [6], "missing_image": [9],
                       "corrupt_image": [10], "path_escapes_root": [11]}
    assert "not a JPEG" not in report["examples"]["corrupt_image"][0]["detail"]  # an error text, not file bytes
    assert report["examples"]["corrupt_image"][0]["detail"].startswith("UnidentifiedImageError")

    assert list(table.columns) == ["path", *LEVELS, "split", "row", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    assert table["row"].tolist() == [1, 2, 4, 5, 7, 8, 12, 14]  # table order = file order
    # Actinopterygii -> Actinopteri, lower-case ranks capitalised, whitespace collapsed, '/' kept
    assert sorted(table["class"].unique()) == ["Actinopteri", "Dipneusti"]
    assert taxonomy["levels"] == LEVELS
    assert ["Actinopteri", "Salmoniformes", "Salmonidae", "Salmo", "Salmo trutta"] in taxonomy["lineages"]
    zebrasoma = ["Actinopteri", "Acanthuriformes", "Acanthuridae", "Zebrasoma", "Zebrasoma flavescens"]
    assert zebrasoma in taxonomy["lineages"]
    assert any(lin[1] == "Perciformes/Scorpaenoidei" for lin in taxonomy["lineages"])
    assert len(taxonomy["lineages"]) == 4 == report["species"]["total"]
    assert taxonomy["lineages"] == sorted(taxonomy["lineages"])
    bbox = table.set_index("row").loc[5, ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].tolist()
    assert bbox == [8.0, 4.0, 24.0, 16.0] and np.isnan(table.set_index("row").loc[2, "bbox_x"])
    # split: four species with 2 images -> 1 test + 1 train each
    assert report["splits"] == {"train": 4, "test": 4}
    assert report["species"]["train_only_single_image"] == 0
    assert sorted(table.loc[table["species"] == "Protopterus annectens", "split"]) == ["test", "train"]
    assert not list(out.glob(".tmp*"))


def test_check_images_modes(tmp_path):
    root = tmp_path / "img"
    (root / "A").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "A" / "ok.jpg", quality=90)  # noise: the scan data dwarfs the header
    Image.fromarray(noise).save(root / "A" / "ok2.jpg", quality=90)
    whole = (root / "A" / "ok.jpg").read_bytes()
    (root / "A" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    ann = tmp_path / "ann.csv"
    ann.write_text("image,class,order,family,genus,species\n"
                   "A/ok.jpg,C,O,F,G,G s\nA/truncated.jpg,C,O,F,G,G s\nA/gone.jpg,C,O,F,G,G s\n../x.jpg,C,O,F,G,G s\n"
                   "A/ok2.jpg,C,O,F,G,G s\n")  # two good images: class C keeps a test image
    dropped = {}
    for mode in ("none", "header", "decode"):
        params = _params({"name": "table", "metadata": str(ann), "images": str(root)}, {"check_images": mode})
        dropped[mode] = _prepare(params, tmp_path / mode)["dropped"]
    assert dropped["none"] == {"path_escapes_root": 1}  # no disk access, but the root check stays
    assert dropped["header"] == {"path_escapes_root": 1, "missing_image": 1}  # a JPEG header survives truncation
    assert dropped["decode"] == {"path_escapes_root": 1, "missing_image": 1, "corrupt_image": 1}


def test_bioscan_prepare_without_images(tmp_path):
    params = _params({"name": "bioscan1m", "metadata": str(FIX), "images": str(tmp_path / "none"),
                      "preprocess": "pad_white"}, {"check_images": "none"})
    report = _prepare(params, tmp_path / "out")
    assert report["dropped"] == {"missing_genus": 1, "missing_order": 1}
    assert report["rows_kept"] == 4 and report["species"] == {"total": 2, "train_only_single_image": 1}
    table = pd.read_parquet(tmp_path / "out" / "table.parquet")
    assert "part93/BIOUG73231-D12.jpg" in table["path"].tolist()
    assert "bbox_x" not in table.columns


# ---------------------------------------------------------------------------------------------- filters


def test_invalid_bbox_conflicts_and_inconsistent_lineages(tmp_path):
    root = tmp_path / "img"
    for i in range(7):
        _jpeg(root / f"{i}.png", size=(40, 30))
    ann = tmp_path / "ann.csv"
    ann.write_text(
        "image,class,order,family,genus,species,x,y,w,h\n"
        "0.png,C,O,F,G,G s,1,1,10,10\n"        # fine
        "1.png,C,O,F,G,G s,100,100,5,5\n"      # bbox outside the 40x30 image
        "2.png,C,O,F,G,G s,1,1,0,5\n"          # zero width
        "3.png,C,O,F,G,G s,,,,\n"              # no bbox: fine
        "4.png,C,O,F,G,G t,,,,\n"              # 4.png labelled twice, differently
        "4.png,C,O,F,G,G u,,,,\n"
        "5.png,C,O,F2,G,G s,,,,\n"             # G s under another family: the majority lineage wins
        "6.png,C,O,F,G,G t,,,,\n")
    cols = {"image": "image", "bbox_x": "x", "bbox_y": "y", "bbox_w": "w", "bbox_h": "h"}
    params = _params({"name": "table", "metadata": str(ann), "images": str(root), "columns": cols})
    report = _prepare(params, tmp_path / "out")
    assert report["dropped"] == {"invalid_bbox": 2, "conflicting_lineage": 2, "inconsistent_lineage": 1}
    assert [e["row"] for e in report["examples"]["invalid_bbox"]] == [2, 3]
    assert report["examples"]["inconsistent_lineage"][0]["detail"] == "kept lineage: C > O > F > G > G s"
    table = pd.read_parquet(tmp_path / "out" / "table.parquet")
    assert table["path"].tolist() == ["0.png", "3.png", "6.png"]


def test_everything_dropped_is_an_error_with_a_report(tmp_path):
    ann = tmp_path / "ann.csv"
    ann.write_text("image,class,order,family,genus,species\nA/1.png,C,O,F,G,\n")
    params = _params({"name": "table", "metadata": str(ann), "images": str(tmp_path)})
    with pytest.raises(UserError, match=r"no usable rows: all 1 were dropped \(missing_species: 1\)"):
        _prepare(params, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["dropped"] == {"missing_species": 1}


@pytest.mark.parametrize("raw, expected", [
    ("  perciformes ", "Perciformes"), ("Perciformes/Scorpaenoidei", "Perciformes/Scorpaenoidei"),
    ("Eupercaria/misc", "Eupercaria/misc"), ("", None), ("   ", None), (None, None),
])
def test_rank_name(raw, expected):
    assert N.rank_name(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("scorpaenopsis obtusa", "Scorpaenopsis obtusa"), ("  Salmo   Trutta ", "Salmo trutta"),
    ("Megaselia sp. BOLD:AAA1234", "Megaselia sp. BOLD:AAA1234"), ("", None),
])
def test_species_name(raw, expected):
    assert N.species_name(raw) == expected


def test_bare_epithet_becomes_binomial_and_synonyms_apply_per_level():
    df = pd.DataFrame({"class": ["Actinopterygii", "actinopteri"], "genus": ["Danaus", "Salmo"],
                       "species": ["plexippus", "Salmo trutta"]}).astype("string")
    out, _ = N.normalise_names(df, ["class", "genus", "species"], {"class": {"actinopterygii": "Actinopteri"}})
    assert out["species"].tolist() == ["Danaus plexippus", "Salmo trutta"]
    assert out["class"].tolist() == ["Actinopteri", "Actinopteri"]




# ---------------------------------------------------------------------------------------------- split


def _species_frame(sizes: dict[str, int]) -> pd.DataFrame:
    rows = [(f"{sp}/{i}.png", sp) for sp, n in sizes.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "species"]).astype("string")


def test_split_rule_per_species():
    sizes = {"A a": 1, "B b": 2, "C c": 3, "D d": 10, "E e": 51}
    df = _species_frame(sizes)
    split, single = P.split_per_species(df, "species", seed=0, test_fraction=0.2)
    assert single == 1
    n_test = split.eq("test").groupby(df["species"]).sum().to_dict()
    assert n_test == {"A a": 0, "B b": 1, "C c": 1, "D d": 2, "E e": 10}
    again, _ = P.split_per_species(df, "species", seed=0, test_fraction=0.2)
    assert again.tolist() == split.tolist()
    other, _ = P.split_per_species(df, "species", seed=1, test_fraction=0.2)
    assert other.tolist() != split.tolist()
    # more images of another species do not move any existing image between train and test
    bigger = pd.concat([df, _species_frame({"F f": 7})], ignore_index=True)
    grown, _ = P.split_per_species(bigger, "species", seed=0, test_fraction=0.2)
    assert grown.iloc[: len(df)].tolist() == split.tolist()
    for bad, shown in ((1.0, "1.0"), (0, "0.0"), (-0.1, "-0.1")):  # checked where the section is built; 0 would
        with pytest.raises(UserError, match=rf"prepare.test_fraction={shown}: expected a number in \(0, 1\)"):
            make_params({"prepare.test_fraction": bad})  # leave generate no test taxa, after every training level


def test_split_keys_on_the_lineage():
    df = _species_frame({"M a": 4}).assign(kingdom=["Plantae", "Animalia", "Plantae", "Animalia"])
    by_name, _ = P.split_per_species(df, "species", seed=0, test_fraction=0.5)
    by_lineage, single = P.split_per_species(df, ["kingdom", "species"], seed=0, test_fraction=0.5)
    assert by_name.eq("test").sum() == 2 and single == 0
    assert by_lineage.eq("test").groupby(df["kingdom"]).sum().to_dict() == {"Animalia": 1, "Plantae": 1}


# ---------------------------------------------------------------------------------------------- the stage script


def _run_stage(tmp_path: Path, dataset: dict, prepare: dict | None = None):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_dict({"dataset": dataset, "prepare": prepare or {"check_images": "none"}}),
                                     sort_keys=False))  # sorted keys would list the levels alphabetically
    return subprocess.run([sys.executable, str(REPO / "stages" / "prepare.py"), "--params", str(params),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, timeout=120)


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_stage_runs_on_fishnet(tmp_path):
    root = tmp_path / "images"
    _fishnet_images(root)
    proc = _run_stage(tmp_path, {"name": "fishnet", "metadata": str(FIX / "fishnet_sample.csv"), "images": str(root),
                                 "synonyms": FISH_SYNONYMS}, {"check_images": "decode"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rows_kept"] == 8


def test_stage_empty_file_is_one_line(tmp_path):
    ann = tmp_path / "empty.csv"
    ann.write_text("")
    proc = _run_stage(tmp_path, {"name": "fishnet", "metadata": str(ann), "images": str(tmp_path)})
    _assert_one_line_error(proc, str(ann), "file is empty")


def test_stage_wrong_field_count_is_one_line(tmp_path):
    lines = (FIX / BIOSCAN_FILENAMES[0]).read_text().splitlines()
    lines[5] += "\textra"
    (tmp_path / BIOSCAN_FILENAMES[0]).write_text("\n".join(lines) + "\n")
    proc = _run_stage(tmp_path, {"name": "bioscan1m", "metadata": str(tmp_path), "images": str(tmp_path)})
    _assert_one_line_error(proc, BIOSCAN_FILENAMES[0], "data row 5 (line 6)", "29 fields, but the header has 28")


def test_stage_missing_column_is_one_line(tmp_path):
    shutil.copy(FIX / "fishnet_sample.csv", tmp_path / "fish.csv")
    text = (tmp_path / "fish.csv").read_text().replace(",Genus,", ",genus_name,", 1)
    (tmp_path / "fish.csv").write_text(text)
    proc = _run_stage(tmp_path, {"name": "fishnet", "metadata": str(tmp_path / "fish.csv"), "images": str(tmp_path)})
    _assert_one_line_error(proc, "fish.csv", "line 1 (header)", "'Genus'")


# ---------------------------------------------------------------------------------------------- real-file quirks


def test_homonym_genera_are_two_taxa(tmp_path):
    """*Morus* the gannet (Sulidae) and *Morus* the mulberry (Moraceae): counted and kept as two genera."""
    meta = str(FIX / "inat2021_homonyms.json")
    levels7 = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    params = _params({"name": "inat2021", "metadata": meta, "images": str(tmp_path)}, {"check_images": "none"})
    report = P.prepare(params.dataset, params.prepare, levels7, tmp_path / "out", show_progress=False)
    # the "NA" genus and the "nan" epithet are missing ranks, not taxa named NA / "Sula nan"
    assert report["dropped"] == {"missing_genus": 1, "missing_species": 1}
    assert report["taxa"] == {"kingdom": 2, "phylum": 2, "class": 2, "order": 2, "family": 2, "genus": 3,
                              "species": 4}
    # genus as the finest level: the two Morus lineages share no ancestor, so neither is "inconsistent"
    genus_only = dataclasses.replace(params.prepare, finest_required="genus")
    report = P.prepare(params.dataset, genus_only, levels7[:-1], tmp_path / "genus", show_progress=False)
    assert "inconsistent_lineage" not in report["dropped"] and report["rows_kept"] == 8
    assert report["taxa"]["genus"] == 3 and report["species"]["total"] == 3
    lineages = json.loads((tmp_path / "genus" / "taxonomy.json").read_text())["lineages"]
    assert [lin[0] for lin in lineages if lin[-1] == "Morus"] == ["Animalia", "Plantae"]


def test_homonyms_versus_inconsistent_lineages(tmp_path):
    ann = tmp_path / "ann.csv"
    ann.write_text(
        "image,class,order,family,genus,species\n"
        "0.png,Aves,Suliformes,Sulidae,Morus,Morus alba\n"           # a homonym binomial: no shared ancestor
        "1.png,Aves,Suliformes,Sulidae,Morus,Morus alba\n"           # besides the genus the binomial spells out
        "2.png,Magnoliopsida,Rosales,Moraceae,Morus,Morus alba\n"
        "3.png,Magnoliopsida,Rosales,Moraceae,Morus,Morus alba\n"
        "4.png,Actinopteri,Salmoniformes,Salmonidae,Salmo,Salmo trutta\n"
        "5.png,Actinopteri,Salmoniformes,Salmonidae,Salmo,Salmo trutta\n"
        "6.png,Actinopterygii,Salmoniformes,Salmonidae,Salmo,Salmo trutta\n")  # shares order + family: inconsistent
    params = _params({"name": "table", "metadata": str(ann), "images": str(tmp_path), "synonyms": {}},
                     {"check_images": "none", "test_fraction": 0.5})
    report = _prepare(params, tmp_path / "out")
    assert report["dropped"] == {"inconsistent_lineage": 1}
    assert report["examples"]["inconsistent_lineage"][0]["row"] == 7
    assert report["examples"]["inconsistent_lineage"][0]["detail"] == (
        "kept lineage: Actinopteri > Salmoniformes > Salmonidae > Salmo > Salmo trutta")
    assert report["species"]["total"] == 3 and report["taxa"]["genus"] == 3 and report["taxa"]["class"] == 3
    table = pd.read_parquet(tmp_path / "out" / "table.parquet")
    assert table.groupby("class")["split"].apply(lambda s: sorted(s)).to_dict() == {
        "Actinopteri": ["test", "train"], "Aves": ["test", "train"], "Magnoliopsida": ["test", "train"]}


def test_na_texts_and_image_urls_are_counted_in_the_report(tmp_path):
    root = tmp_path / "img"
    _jpeg(root / "a" / "1.png")
    _jpeg(root / "a" / "4.png")
    ann = tmp_path / "ann.csv"
    ann.write_text("image,class,order,family,genus,species\n"
                   "a/1.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax\n"
                   "a/4.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax\n"
                   "a/2.png,Aves,Passeriformes,Corvidae,NA,Corvus corax\n"      # R's NA: a missing genus
                   "https://example.org/3.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax\n")
    report = _prepare(_params({"name": "table", "metadata": str(ann), "images": str(root)}), tmp_path / "out")
    assert report["dropped"] == {"missing_genus": 1, "image_url": 1} and report["rows_kept"] == 2
    assert report["examples"]["image_url"][0] == {"row": 4, "path": "https://example.org/3.png", "class": "Aves",
                                                  "order": "Passeriformes", "family": "Corvidae", "genus": "Corvus",
                                                  "species": "Corvus corax"}
    assert report["taxa"]["genus"] == 1


def test_stage_not_utf8_is_one_line(tmp_path):
    data = (FIX / "fishnet_sample.csv").read_bytes().replace(b"Scorpaenopsis obtusa", b"Scorpaenopsis obt\xfasa", 1)
    (tmp_path / "fish.csv").write_bytes(data)
    proc = _run_stage(tmp_path, {"name": "fishnet", "metadata": str(tmp_path / "fish.csv"), "images": str(tmp_path)})
    _assert_one_line_error(proc, "fish.csv", "data row 4 (line 5), column 'species'", "not UTF-8 text (byte 0xFA")


# ---------------------------------------------------------------------------------------------- partial lineages


def _fishnet_shaped(tmp_path: Path) -> Path:
    """FishNet's header with hand-made rows: two species with 3 images each, iNat-sourced rows without a
    species (as in FishNet's public CSVs), one without genus and species, a gap and a row without a class."""
    header = (FIX / "fishnet_sample.csv").read_text().splitlines()[0].split(",")
    rows = [("Zebrasoma flavescens", "Zebrasoma", "Acanthuridae", "Acanthuriformes", "Actinopteri", "fishbase")] * 3
    rows += [("Salmo trutta", "Salmo", "Salmonidae", "Salmoniformes", "Actinopterygii", "fishbase")] * 3
    rows += [("", "Zebrasoma", "Acanthuridae", "Acanthuriformes", "Actinopterygii", "inat")] * 2
    rows += [("", "Salmo", "Salmonidae", "Salmoniformes", "Actinopteri", "inat"),
             ("", "", "Salmonidae", "Salmoniformes", "Actinopteri", "inat"),        # named down to family
             ("Salmo salar", "", "Salmonidae", "Salmoniformes", "Actinopteri", "inat"),  # a gap: no genus
             ("", "Salmo", "Salmonidae", "Salmoniformes", "", "inat")]                 # no class
    lines = [",".join(header)]
    for i, (species, genus, family, order, cls, source) in enumerate(rows):
        row = dict.fromkeys(header, "")
        row.update({"": str(i), "Unnamed: 0": str(100 + i), "species": species, "image": f"{i:04d}.jpg",
                    "Genus": genus, "Family": family, "Order": order, "Class": cls, "source": source,
                    "Folder": family or "unknown"})
        lines.append(",".join(row[h] for h in header))
    path = tmp_path / "train.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _partial_params(tmp_path: Path, finest: str, check_images: str = "none"):
    return _params({"name": "fishnet", "metadata": str(_fishnet_shaped(tmp_path)), "images": str(tmp_path),
                    "synonyms": FISH_SYNONYMS}, {"check_images": check_images, "finest_required": finest,
                                                 "test_fraction": 0.34})


def test_partial_lineages_kept_for_training_only(tmp_path):
    from taxadiffusion.sampling.plan import PlanRule, make_plan

    report = _prepare(_partial_params(tmp_path, "class"), tmp_path / "out")
    table, taxonomy, _ = _read_outputs(tmp_path / "out")
    assert report["rows_in"] == 12 == report["rows_kept"] + sum(report["dropped"].values())
    assert report["dropped"] == {"missing_class": 1, "missing_genus": 1}  # the classless row, the gap
    assert report["partial_rows"] == {"family": 1, "genus": 3} and report["rows_kept"] == 10
    partial = table["species"].isna()
    assert partial.sum() == 4 and set(table.loc[partial, "split"]) == {"train"}
    assert report["splits"] == {"train": 8, "test": 2}  # one test image per complete species
    assert [lin[-1] for lin in taxonomy["lineages"]] == ["Zebrasoma flavescens", "Salmo trutta"]  # complete only
    assert report["species"]["total"] == 2 and report["taxa"]["genus"] == 2 and report["taxa"]["family"] == 2
    plan = make_plan(table[table["split"] == "test"], LEVELS, PlanRule("species", 400, 15, 50), seed=0)
    assert sorted(plan["species"]) == ["Salmo trutta", "Zebrasoma flavescens"]


def test_rows_each_training_level_uses_on_a_fishnet_shaped_table(tmp_path):
    """Every kept train row trains every level; a missing name is the official "<level>: None" text."""
    from taxadiffusion.models.conditioner import lineage_texts

    counts = {}
    for finest in ("class", "species"):
        _prepare(_partial_params(tmp_path / finest, finest), tmp_path / finest / "out")
        table = pd.read_parquet(tmp_path / finest / "out" / "table.parquet")
        train = [{lv: r[lv] for lv in LEVELS} for r in table[table["split"] == "train"].to_dict("records")]
        texts = [lineage_texts(LEVELS, lin, species_text="as_written") for lin in train]
        counts[finest] = {lv: (len(texts), sum(t[k].endswith(": None") for t in texts)) for k, lv in enumerate(LEVELS)}
    # (rows the level trains on, of which its own text is "<level>: None")
    assert counts["class"] == {"class": (8, 0), "order": (8, 0), "family": (8, 0), "genus": (8, 1), "species": (8, 4)}
    assert counts["species"] == {lv: (4, 0) for lv in LEVELS}  # BIOSCAN's rule: complete lineages only


def test_partial_lineages_reach_the_trainer_through_the_shards(tmp_path):
    from taxadiffusion.data.shard import write_shards
    from taxadiffusion.data.shard_reader import load_split_arrays
    from taxadiffusion.models.conditioner import lineage_texts

    params = _partial_params(tmp_path, "class", check_images="header")
    for _, row in pd.read_csv(params.dataset.metadata, dtype=str, keep_default_na=False).iterrows():
        _jpeg(tmp_path / row["Folder"] / row["image"])
    _prepare(params, tmp_path / "prepared")
    write_shards(params.dataset, params.shard, LEVELS, tmp_path / "prepared", tmp_path / "shards", show_progress=False)
    _, lineages = load_split_arrays(tmp_path / "shards", "train")
    texts = sorted(lineage_texts(LEVELS, lin, species_text="as_written")[-2:] for lin in lineages)
    assert texts.count(["genus: Zebrasoma", "specific_epithet: None"]) == 2
    assert ["genus: None", "specific_epithet: None"] in texts and len(texts) == 8
    _, test = load_split_arrays(tmp_path / "shards", "test")
    assert all(None not in lin.values() for lin in test) and len(test) == 2


# ---------------------------------------------------------------------------------------------- canonical names


def _table(tmp_path: Path, rows: list[tuple], header="image,class,order,family,genus,species") -> Path:
    """An annotation CSV (UTF-8, exactly the given texts) of the ``table`` format."""
    path = tmp_path / "ann.csv"
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _lineage(i: int, genus: str, species: str) -> tuple:
    return (f"{i}.png", "Insecta", "Diptera", "Phoridae", genus, species)


def test_one_canonical_name_before_anything_counts(tmp_path):
    """NFC vs NFD, zero-width and bidi characters, odd whitespace and an ALL-CAPS copy are one species, each
    normalised row counted under its rule, the case variants listed with the rule applied."""
    spellings = [
        ("Gotium", "Gotium caféa"), ("Gotium", "Gotium caféa"), ("Gotium", "Gotium caféa"),
        ("Gotium", "Gotium cafe\u0301a"),          # NFD: e + combining acute accent
        ("Gotium", "Gotium caféa\u200f"),          # a trailing right-to-left mark (copied from a web page)
        ("Gotium", "Gotium\u200b caféa"),          # an inner zero-width space
        ("Gotium", "\u2066Gotium ca\u00adféa\u2069"),  # bidi isolates and a soft hyphen
        ("Go\ufefftium", "Gotium caféa"),          # a BOM inside the genus
        ("Gotium", "Gotium  caféa"),              # two spaces
        ("Gotium", "Gotium\u00a0caféa"),           # a no-break space
        ("GOTIUM", "GOTIUM CAFÉA"),               # an ALL-CAPS copy
        ("Gotium", "Gotium bameutisensis"), ("Gotium", "Gotium bameutisensis"),
    ]
    ann = _table(tmp_path, [_lineage(i, g, s) for i, (g, s) in enumerate(spellings)])
    params = _params({"name": "table", "metadata": str(ann), "images": str(tmp_path)}, {"check_images": "none"})
    report = _prepare(params, tmp_path / "out")
    table, taxonomy, _ = _read_outputs(tmp_path / "out")
    assert report["dropped"] == {} and report["rows_kept"] == 13
    assert report["species"]["total"] == 2 and report["taxa"]["genus"] == 1
    assert [lin[-1] for lin in taxonomy["lineages"]] == ["Gotium bameutisensis", "Gotium caféa"]
    assert set(table["species"]) == {"Gotium bameutisensis", "Gotium caf\u00e9a"}  # NFC, no invisible character
    assert report["normalised"] == {"invisible_chars": 4, "unicode_nfc": 1, "whitespace": 2, "capitalisation": 1,
                                    "binomial": 0, "case_merged": 1, "synonyms": 0}
    rule = "merged into the most frequent spelling (ties: fewer capitals, then code-point order)"
    assert report["case_variants"] == {
        "genus": {"rule": rule, "groups": 1, "examples": [{"kept": "Gotium", "rows": 12, "merged": {"GOTIUM": 1}}]},
        "species": {"rule": rule, "groups": 1,
                    "examples": [{"kept": "Gotium caféa", "rows": 10, "merged": {"GOTIUM caféa": 1}}]}}


def test_case_variants_merge_into_the_most_frequent_spelling():
    df = pd.DataFrame({"genus": ["Gotium", "GOTIUM", "GOTIUM", "Salmo", "SALMO", "Gotium"],
                       "species": ["Gotium x", "GOTIUM x", "GOTIUM x", "Salmo y", "SALMO y", "Gotium x"]}
                      ).astype("string")
    out, names = N.normalise_names(df, ["genus", "species"], {})
    # Gotium 2 : GOTIUM 2 -> the tie goes to fewer capitals; Salmo 1 : SALMO 1 likewise
    assert out["genus"].tolist() == ["Gotium"] * 3 + ["Salmo"] * 2 + ["Gotium"]
    assert out["species"].tolist() == ["Gotium x"] * 3 + ["Salmo y"] * 2 + ["Gotium x"]
    assert names["normalised"]["case_merged"] == 3
    assert N.canonical_name(" \u200eA\u202a  b\u202c\u2060 ") == "A b" and N.canonical_name("\u200b") is None


# ---------------------------------------------------------------------------------------------- placeholder species


PLACEHOLDERS = ["Gotium sp.", "Gotium spp", "Gotium cf. bameutisensis", "Gotium aff. x", "Gotium nr. x", "Gotium ?",
                "Gotium", "Gotium SP."]


def _placeholder_table(tmp_path: Path) -> Path:
    rows = [_lineage(i, "Gotium", s) for i, s in enumerate(PLACEHOLDERS)]
    rows += [_lineage(10 + i, "Gotium", "Gotium bameutisensis") for i in range(3)]
    rows += [_lineage(20 + i, "Gotium", "Gotium spinosa") for i in range(2)]  # "sp" inside a word: a species
    return _table(tmp_path, rows)


def test_placeholder_species_are_dropped_where_a_species_is_required(tmp_path):
    params = _params({"name": "table", "metadata": str(_placeholder_table(tmp_path)), "images": str(tmp_path)},
                     {"check_images": "none", "finest_required": "species"})
    report = _prepare(params, tmp_path / "out")
    assert report["dropped"] == {"placeholder_species": 8} and report["rows_kept"] == 5
    assert report["species"]["total"] == 2
    details = [e["detail"] for e in report["examples"]["placeholder_species"]]
    assert details[:3] == ["species 'Gotium sp.': placeholder word 'sp.'",
                           "species 'Gotium spp': placeholder word 'spp'",
                           "species 'Gotium cf. bameutisensis': placeholder word 'cf.'"]
    assert details[5:] == ["species 'Gotium ?': placeholder word '?'", "species 'Gotium' equals its genus",
                           "species 'Gotium sp.': placeholder word 'sp.'"]  # SP. after the case merge
    assert report["placeholder_species"]["rows"] == 8 and report["placeholder_species"]["kept_as_partial_lineage"] == 0


def test_placeholder_species_keep_their_coarser_levels_as_a_partial_lineage(tmp_path):
    params = _params({"name": "table", "metadata": str(_placeholder_table(tmp_path)), "images": str(tmp_path)},
                     {"check_images": "none", "finest_required": "genus"})
    report = _prepare(params, tmp_path / "out")
    table, taxonomy, _ = _read_outputs(tmp_path / "out")
    assert report["dropped"] == {} and report["rows_kept"] == 13
    assert report["partial_rows"] == {"genus": 8} and report["placeholder_species"]["kept_as_partial_lineage"] == 8
    assert table["species"].isna().sum() == 8 and set(table.loc[table["species"].isna(), "split"]) == {"train"}
    assert [lin[-1] for lin in taxonomy["lineages"]] == ["Gotium bameutisensis", "Gotium spinosa"]


def test_placeholder_words_are_a_param(tmp_path):
    params = _params({"name": "table", "metadata": str(_placeholder_table(tmp_path)), "images": str(tmp_path)},
                     {"check_images": "none", "placeholder_words": ["cf"]})
    report = _prepare(params, tmp_path / "out")
    assert report["dropped"] == {"placeholder_species": 2}  # cf. and the species equal to its genus
    assert report["placeholder_species"]["words"] == ["cf"]
    for bad in ("sp", [""], ["."], ["sp x"], [1]):
        with pytest.raises(UserError, match=r"prepare.placeholder_words=.*: expected a list of single words"):
            make_params({"prepare.placeholder_words": bad})


# ---------------------------------------------------------------------------------------------- levels and the split


def test_known_ranks_out_of_biological_order_are_a_params_error(tmp_path):
    fine_to_coarse = {lv: {"parent": p} for lv, p in zip(LEVELS + ["kingdom", "phylum"],
                                                          ["base"] + LEVELS + ["kingdom"])}
    with pytest.raises(UserError, match=r"^params.yaml levels=\['class', 'order', 'family', 'genus', 'species', "
                                        r"'kingdom', 'phylum'\]: expected ranks coarse -> fine, but 'kingdom' is "
                                        r"listed after 'species' \(in order: kingdom > phylum > class > "):
        make_params({"levels": fine_to_coarse})
    data = params_dict({"levels": fine_to_coarse})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    run = subprocess.run([sys.executable, str(REPO / "stages" / "prepare.py"), "--params", str(tmp_path / "p.yaml"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    _assert_one_line_error(run, "levels=", "'kingdom' is listed after 'species'")
    two = {"clade": {"parent": "base"}, "morph": {"parent": "clade"}}  # names it does not know: the data decides
    assert make_params({"levels": two, "generate.target_level": "morph", "figures.embedding_level": "clade",
                        "evaluate.group_level": "clade", "prepare.finest_required": "morph"}).level_names == \
        ["clade", "morph"]


def _clades(tmp_path: Path, names: list[str]):
    """Four clades of three morphs each (each morph in one clade), under the levels ``names`` (coarse first)."""
    rows = [(f"{c}{m}{i}.png", f"Clade{c}", f"Morph{c}{m}") for c in "ABCD" for m in "123" for i in range(2)]
    ann = _table(tmp_path, rows, header="image,clade,morph")
    levels = {lv: {"parent": p} for lv, p in zip(names, ["base", *names])}
    return make_params({"levels": levels, "generate.target_level": names[-1], "figures.embedding_level": names[0],
                        "evaluate.group_level": names[0],
                        "dataset": {"name": "table", "metadata": str(ann), "images": str(tmp_path)},
                        "prepare": {"check_images": "none", "finest_required": names[-1]}}), names


def test_inverted_levels_of_unknown_names_are_an_error_from_the_data(tmp_path):
    params, names = _clades(tmp_path, ["clade", "morph"])
    report = P.prepare(params.dataset, params.prepare, names, tmp_path / "ok", show_progress=False)
    assert report["taxa"] == {"clade": 4, "morph": 12} and report["dropped"] == {}
    params, names = _clades(tmp_path, ["morph", "clade"])
    with pytest.raises(UserError, match=r"^params.yaml levels: 4 of 4 'clade' taxa in .*ann.csv have several 'morph' "
                                        r"parents, but a taxon has one parent: the levels look inverted"):
        P.prepare(params.dataset, params.prepare, names, tmp_path / "inverted", show_progress=False)
    assert not (tmp_path / "inverted").exists()


def test_every_class_ends_with_a_test_image(tmp_path):
    rows = [_lineage(i, "Gotium", "Gotium caféa") for i in range(3)]
    rows += [(f"b{i}.png", "Arachnida", "Araneae", "Salticidae", "Salticus", f"Salticus s{i}") for i in range(2)]
    params = _params({"name": "table", "metadata": str(_table(tmp_path, rows)), "images": str(tmp_path)},
                     {"check_images": "none"})
    with pytest.raises(UserError, match=r"ann.csv: class 'Arachnida' has no test image, so evaluate cannot score it: "
                                        r"its 2 image\(s\) of complete lineage are 2 species with one image each.*"
                                        r"prepare.test_fraction=0.2"):
        _prepare(params, tmp_path / "out")
    assert not (tmp_path / "out").exists()
