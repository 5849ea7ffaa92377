"""Dataset readers on hand-made rows with the real FishNet / BIOSCAN-1M / iNat2021 layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxadiffusion.config import DatasetConfig
from taxadiffusion.errors import UserError
from taxadiffusion.readers import BIOSCAN_FILENAMES, FISHNET_HEADER, read_dataset

FIX = Path(__file__).parent / "fixtures"
LEVELS = ["class", "order", "family", "genus", "species"]


def _read(**kw):
    return read_dataset(DatasetConfig(**kw), LEVELS)


def _by_row(df: pd.DataFrame) -> dict:
    return {int(r["row"]): r for r in df.to_dict("records")}


# ---------------------------------------------------------------------------------------------- FishNet


def test_fishnet_fixture_has_the_real_header():
    assert (FIX / "fishnet_sample.csv").read_text().splitlines()[0].split(",") == FISHNET_HEADER


def test_fishnet_paths_species_synonym_source_and_slash_names():
    df, drops = _read(name="fishnet", metadata=str(FIX / "fishnet_sample.csv"))
    rows = _by_row(df)
    assert len(df) == 13 and drops.counts == {}
    # URL image field -> <Folder>/<basename>
    assert rows[1]["path"] == "Acanthuridae/Zefla_u2.jpg"
    # bare uuid file name (inat rows) and an empty species on that row
    assert rows[3]["path"] == "Acanthuridae/3f2b8c1e-6d7a-4b8e-9a1c-2e5f7d9b0a11.jpg"
    assert pd.isna(rows[3]["species"]) and rows[3]["class"] == "Actinopterygii"  # synonyms are applied in prepare
    # '/' inside a name is kept verbatim
    assert rows[4]["order"] == "Perciformes/Scorpaenoidei"
    # a quoted field with a comma does not shift the columns
    assert rows[2]["genus"] == "Zebrasoma" and rows[2]["species"] == "Zebrasoma flavescens"
    assert rows[11]["path"] == "../x.jpg"  # kept for prepare's path_escapes_root check
    assert pd.isna(rows[13]["class"])
    assert "bbox_x" not in df.columns


def test_fishnet_bbox_json_matches_on_file_name_without_url_and_extension():
    df, _ = _read(name="fishnet", metadata=str(FIX / "fishnet_sample.csv"), bbox_json=str(FIX / "fishnet_bbox.json"))
    rows = _by_row(df)
    assert [rows[5][c] for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")] == [8.0, 4.0, 24.0, 16.0]
    assert rows[1]["bbox_w"] == 40.0
    assert np.isnan(rows[4]["bbox_x"]) and np.isnan(rows[2]["bbox_x"])


def test_fishnet_column_override_and_unknown_level():
    df, _ = read_dataset(DatasetConfig(name="fishnet", metadata=str(FIX / "fishnet_sample.csv"),
                                       columns={"order": "NewOrder"}), LEVELS)
    assert _by_row(df)[4]["order"] == "Perciformes"
    with pytest.raises(UserError, match="level 'tribe' has no column"):
        read_dataset(DatasetConfig(name="fishnet", metadata=str(FIX / "fishnet_sample.csv")), ["class", "tribe"])


def test_bbox_json_malformed_entry_is_one_line_error(tmp_path):
    bad = tmp_path / "bbox.json"
    bad.write_text(json.dumps({"Zefla_u2": {"x": 1, "y": 2, "w": 3}}))
    with pytest.raises(UserError, match=r"bbox.json: entry 'Zefla_u2': expected an object with keys x, y, w, h"):
        _read(name="fishnet", metadata=str(FIX / "fishnet_sample.csv"), bbox_json=str(bad))


# ---------------------------------------------------------------------------------------------- BIOSCAN-1M


def test_bioscan_not_classified_and_part_chunk_paths():
    df, drops = _read(name="bioscan1m", metadata=str(FIX / BIOSCAN_FILENAMES[0]))
    rows = _by_row(df)
    assert len(df) == 6 and drops.counts == {}
    assert rows[1]["path"] == "part18/BIOUG68001-C12.jpg" and rows[4]["path"] == "part93/BIOUG73231-D12.jpg"
    assert rows[1]["species"] == "Megaselia scalaris" and rows[1]["class"] == "Insecta"
    assert pd.isna(rows[3]["genus"]) and pd.isna(rows[3]["species"]) and rows[3]["family"] == "Cecidomyiidae"
    assert pd.isna(rows[5]["order"])
    # the unbalanced '"' in copyright_holder (read without quoting) did not swallow the row
    assert rows[6]["path"] == "part93/BIOUG68134-F03.jpg"
    assert not (df[LEVELS] == "not_classified").any(axis=None)


@pytest.mark.parametrize("name", BIOSCAN_FILENAMES)
def test_bioscan_both_file_names_as_file_or_folder(tmp_path, name):
    shutil.copy(FIX / BIOSCAN_FILENAMES[0], tmp_path / name)
    by_folder, _ = _read(name="bioscan1m", metadata=str(tmp_path))
    by_file, _ = _read(name="bioscan1m", metadata=str(tmp_path / name))
    other = BIOSCAN_FILENAMES[1 - BIOSCAN_FILENAMES.index(name)]
    by_other_name, _ = _read(name="bioscan1m", metadata=str(tmp_path / other))  # the params name the other spelling
    assert len(by_folder) == len(by_file) == len(by_other_name) == 6


def test_bioscan_folder_without_metadata_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="folder holds neither BIOSCAN_Insect_Dataset_metadata.tsv nor"):
        _read(name="bioscan1m", metadata=str(tmp_path))


def test_bioscan_chunk_number_kept_as_text(tmp_path):
    text = (FIX / BIOSCAN_FILENAMES[0]).read_text().replace("\t18\t", "\t007\t", 1)
    (tmp_path / BIOSCAN_FILENAMES[0]).write_text(text)
    df, _ = _read(name="bioscan1m", metadata=str(tmp_path))
    assert df["path"].iloc[0] == "part007/BIOUG68001-C12.jpg"  # pinned string dtype: no int/float round trip


# ---------------------------------------------------------------------------------------------- iNat2021


def test_inat_binomial_seven_levels_and_unknown_ids():
    levels7 = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    df, drops = read_dataset(DatasetConfig(name="inat2021", metadata=str(FIX / "inat2021_train.json")), levels7)
    assert drops.counts == {"unknown_image_id": 1, "unknown_category_id": 1}
    assert drops.examples["unknown_image_id"][0]["row"] == 5
    assert drops.examples["unknown_category_id"][0]["row"] == 6
    rows = _by_row(df)
    assert rows[1]["species"] == "Danaus plexippus" and rows[1]["kingdom"] == "Animalia"
    assert rows[4]["path"].startswith("train/08190_Plantae") and rows[4]["class"] == "Magnoliopsida"
    assert len(df) + sum(drops.counts.values()) == 6


def test_inat_missing_field_names_item_and_row(tmp_path):
    data = json.loads((FIX / "inat2021_train.json").read_text())
    del data["annotations"][2]["category_id"]
    (tmp_path / "train.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"annotations\[2\] \(row 3\): missing field 'category_id'"):
        _read(name="inat2021", metadata=str(tmp_path / "train.json"))


# ---------------------------------------------------------------------------------------------- table / synthetic


def _table_frame():
    return pd.DataFrame({
        "file": ["a/1.png", "a/2.png"], "Cls": ["Aves", "Aves"], "Ord": ["Passeriformes"] * 2,
        "Fam": ["Corvidae"] * 2, "Gen": ["Corvus"] * 2, "Sp": ["Corvus corax", "Corvus corone"],
        "x": [1, 2], "y": [3, 4], "w": [5, 6], "h": [7, 8],
    })


@pytest.mark.parametrize("ext", ["csv", "tsv", "parquet"])
def test_table_reader_column_map_by_extension(tmp_path, ext):
    frame = _table_frame()
    path = tmp_path / f"ann.{ext}"
    if ext == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="," if ext == "csv" else "\t", index=False)
    columns = {"image": "file", "class": "Cls", "order": "Ord", "family": "Fam", "genus": "Gen", "species": "Sp",
               "bbox_x": "x", "bbox_y": "y", "bbox_w": "w", "bbox_h": "h"}
    df, _ = _read(name="table", metadata=str(path), columns=columns)
    assert df["path"].tolist() == ["a/1.png", "a/2.png"]
    assert df["species"].tolist() == ["Corvus corax", "Corvus corone"]
    assert df["bbox_h"].tolist() == [7.0, 8.0] and df["row"].tolist() == [1, 2]


def test_table_reader_unknown_map_key_and_missing_column(tmp_path):
    path = tmp_path / "ann.csv"
    _table_frame().to_csv(path, index=False)
    with pytest.raises(UserError, match=r"dataset.columns has unknown key\(s\) \['kingdom'\]"):
        _read(name="table", metadata=str(path), columns={"kingdom": "K"})
    with pytest.raises(UserError, match=r"ann.csv: line 1 \(header\): missing required column\(s\) 'image'"):
        _read(name="table", metadata=str(path), columns={})


def test_synthetic_is_the_table_reader_with_a_fixed_map(tmp_path):
    path = tmp_path / "annotations.csv"
    path.write_text("image,class,order,family,genus,species\nA/x.png,A,B,C,D,D e\n")
    df, _ = _read(name="synthetic", metadata=str(path), columns={"image": "ignored"})
    assert df.iloc[0].to_dict() == {"path": "A/x.png", "class": "A", "order": "B", "family": "C", "genus": "D",
                                         "species": "D e", "row": 1}


# ---------------------------------------------------------------------------------------------- broken files


def test_missing_column_names_file_and_column(tmp_path):
    lines = (FIX / "fishnet_sample.csv").read_text().splitlines()
    lines[0] = lines[0].replace(",Folder,", ",Fold,")
    bad = tmp_path / "fish.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"fish.csv: line 1 \(header\): missing required column\(s\) 'Folder'") as exc:
        _read(name="fishnet", metadata=str(bad))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("content, message", [
    ("", "file is empty"),
    ("\n\n", "file is empty"),
    (",".join(FISHNET_HEADER) + "\n", "has a header but no data rows"),
])
def test_empty_files(tmp_path, content, message):
    path = tmp_path / "fish.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        _read(name="fishnet", metadata=str(path))


@pytest.mark.parametrize("delta", [-1, +2])
def test_wrong_field_count_names_the_row(tmp_path, delta):
    lines = (FIX / "fishnet_sample.csv").read_text().splitlines()
    fields = lines[4].split(",")  # data row 4
    lines[4] = ",".join(fields[:delta] if delta < 0 else fields + ["x"] * delta)
    bad = tmp_path / "fish.csv"
    bad.write_text("\n".join(lines) + "\n")
    n = 25 + delta
    with pytest.raises(UserError, match=rf"fish.csv: data row 4 \(line 5\): {n} fields, but the header has 25"):
        _read(name="fishnet", metadata=str(bad))


def test_wrong_field_count_in_bioscan_tsv(tmp_path):
    lines = (FIX / BIOSCAN_FILENAMES[0]).read_text().splitlines()
    lines.insert(3, "\t".join(lines[2].split("\t")[:20]))
    (tmp_path / BIOSCAN_FILENAMES[1]).write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"data row 3 \(line 4\): 20 fields, but the header has 28"):
        _read(name="bioscan1m", metadata=str(tmp_path))


def test_unknown_dataset_name_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="dataset.name 'fishnets' is not one of"):
        _read(name="fishnets", metadata=str(tmp_path / "x.csv"))
    with pytest.raises(UserError, match=r"x.csv: file not found"):
        _read(name="fishnet", metadata=str(tmp_path / "x.csv"))
