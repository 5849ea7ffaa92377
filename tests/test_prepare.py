"""``prepare``: normalisation, filters with counted reasons, image checks, the split, and the stage script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from taxadiffusion import prepare as P
from taxadiffusion.config import params_from_dict
from taxadiffusion.errors import UserError
from taxadiffusion.readers import BIOSCAN_FILENAMES

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures"
LEVELS = ["class", "order", "family", "genus", "species"]
FISH_SYNONYMS = {"class": {"Actinopterygii": "Actinopteri"}}


def _jpeg(path: Path, size=(40, 30), color=(200, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=90)


def _params(dataset: dict, prepare: dict | None = None):
    return params_from_dict({"dataset": dataset, "prepare": {"check_images": "header", **(prepare or {})}})


def _fishnet_images(root: Path) -> None:
    for name in ["Acanthuridae/Zefla_u2.jpg", "Acanthuridae/Zefla_u3.jpg",
                 "Acanthuridae/3f2b8c1e-6d7a-4b8e-9a1c-2e5f7d9b0a11.jpg", "Scorpaenidae/Scobt_u0.jpg",
                 "Scorpaenidae/Scobt_u1.jpg", "Salmonidae/Satru_u0.jpg", "Salmonidae/Satru_u1.jpg",
                 "Protopteridae/Prann_u0.jpg", "Myxinidae/Myglu_u0.jpg"]:
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
    report = P.prepare(_fishnet_params(tmp_path), out=out, show_progress=False)
    table, taxonomy, on_disk = _read_outputs(out)
    assert on_disk == json.loads(json.dumps(report))
    assert report["dropped"] == {"missing_species": 1, "missing_class": 1, "duplicate": 1, "missing_image": 1,
                                 "corrupt_image": 1, "path_escapes_root": 1}
    assert report["rows_in"] == 13 and report["rows_kept"] == 7
    assert report["rows_in"] == report["rows_kept"] + sum(report["dropped"].values())
    rows_of = {k: [e["row"] for e in v] for k, v in report["examples"].items()}
    assert rows_of == {"missing_species": [3], "missing_class": [13], "duplicate": [6], "missing_image": [9],
                       "corrupt_image": [10], "path_escapes_root": [11]}
    assert "not a JPEG" not in report["examples"]["corrupt_image"][0]["detail"]  # an error text, not file bytes
    assert report["examples"]["corrupt_image"][0]["detail"].startswith("UnidentifiedImageError")

    assert list(table.columns) == ["path", *LEVELS, "split", "row", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    assert table["row"].tolist() == [1, 2, 4, 5, 7, 8, 12]  # table order = file order
    # Actinopterygii -> Actinopteri, lower-case ranks capitalised, whitespace collapsed, '/' kept
    assert sorted(table["class"].unique()) == ["Actinopteri", "Dipneusti"]
    assert taxonomy["levels"] == LEVELS
    assert ["Actinopteri", "Salmoniformes", "Salmonidae", "Salmo", "Salmo trutta"] in taxonomy["lineages"]
    assert ["Actinopteri", "Acanthuriformes", "Acanthuridae", "Zebrasoma", "Zebrasoma flavescens"] in taxonomy["lineages"]
    assert any(lin[1] == "Perciformes/Scorpaenoidei" for lin in taxonomy["lineages"])
    assert len(taxonomy["lineages"]) == 4 == report["species"]["total"]
    assert taxonomy["lineages"] == sorted(taxonomy["lineages"])
    bbox = table.set_index("row").loc[5, ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].tolist()
    assert bbox == [8.0, 4.0, 24.0, 16.0] and np.isnan(table.set_index("row").loc[2, "bbox_x"])
    # split: three species with 2 images -> 1 test + 1 train each; the single-image species stays in train
    assert report["splits"] == {"train": 4, "test": 3}
    assert report["species"]["train_only_single_image"] == 1
    assert table.loc[table["species"] == "Protopterus annectens", "split"].tolist() == ["train"]
    assert not list(out.glob(".tmp*"))


def test_check_images_modes(tmp_path):
    root = tmp_path / "img"
    (root / "A").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "A" / "ok.jpg", quality=90)  # noise: the scan data dwarfs the header
    whole = (root / "A" / "ok.jpg").read_bytes()
    (root / "A" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    ann = tmp_path / "ann.csv"
    ann.write_text("image,class,order,family,genus,species\n"
                   "A/ok.jpg,C,O,F,G,G s\nA/truncated.jpg,C,O,F,G,G s\nA/gone.jpg,C,O,F,G,G s\n../x.jpg,C,O,F,G,G s\n")
    dropped = {}
    for mode in ("none", "header", "decode"):
        params = _params({"name": "table", "metadata": str(ann), "images": str(root)}, {"check_images": mode})
        dropped[mode] = P.prepare(params, out=tmp_path / mode, show_progress=False)["dropped"]
    assert dropped["none"] == {"path_escapes_root": 1}  # no disk access, but the root check stays
    assert dropped["header"] == {"path_escapes_root": 1, "missing_image": 1}  # a JPEG header survives truncation
    assert dropped["decode"] == {"path_escapes_root": 1, "missing_image": 1, "corrupt_image": 1}


def test_bioscan_prepare_without_images(tmp_path):
    params = _params({"name": "bioscan1m", "metadata": str(FIX), "images": str(tmp_path / "none"),
                      "preprocess": "pad_white"}, {"check_images": "none"})
    report = P.prepare(params, out=tmp_path / "out", show_progress=False)
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
    report = P.prepare(params, out=tmp_path / "out", show_progress=False)
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
        P.prepare(params, out=tmp_path / "out", show_progress=False)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["dropped"] == {"missing_species": 1}


@pytest.mark.parametrize("raw, expected", [
    ("  perciformes ", "Perciformes"), ("Perciformes/Scorpaenoidei", "Perciformes/Scorpaenoidei"),
    ("Eupercaria/misc", "Eupercaria/misc"), ("", None), ("   ", None), (None, None),
])
def test_rank_name(raw, expected):
    assert P.rank_name(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("scorpaenopsis obtusa", "Scorpaenopsis obtusa"), ("  Salmo   Trutta ", "Salmo trutta"),
    ("Megaselia sp. BOLD:AAA1234", "Megaselia sp. BOLD:AAA1234"), ("", None),
])
def test_species_name(raw, expected):
    assert P.species_name(raw) == expected


def test_bare_epithet_becomes_binomial_and_synonyms_apply_per_level():
    df = pd.DataFrame({"class": ["Actinopterygii", "actinopteri"], "genus": ["Danaus", "Salmo"],
                       "species": ["plexippus", "Salmo trutta"]}).astype("string")
    out = P.normalise_names(df, ["class", "genus", "species"], {"class": {"actinopterygii": "Actinopteri"}})
    assert out["species"].tolist() == ["Danaus plexippus", "Salmo trutta"]
    assert out["class"].tolist() == ["Actinopteri", "Actinopteri"]


def test_safe_name():
    assert P.safe_name("Perciformes/Scorpaenoidei") == "Perciformes_Scorpaenoidei"
    assert P.safe_name("..") == "_" and "/" not in P.safe_name("../../etc")


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
    with pytest.raises(UserError, match="test_fraction must be in"):
        P.split_per_species(df, "species", seed=0, test_fraction=1.0)


# ---------------------------------------------------------------------------------------------- the stage script


def _run_stage(tmp_path: Path, dataset: dict, prepare: dict | None = None):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"dataset": dataset, "prepare": prepare or {"check_images": "none"}}))
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
    assert json.loads((tmp_path / "out" / "report.json").read_text())["rows_kept"] == 7


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
