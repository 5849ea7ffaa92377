"""Dataset readers on hand-made rows with the real FishNet / BIOSCAN-1M / iNat2021 layouts."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.params import section

from taxadiffusion.core.errors import UserError
from taxadiffusion.data.readers import BIOSCAN_FILENAMES, FISHNET_HEADER, read_dataset

FIX = Path(__file__).parent / "fixtures"
LEVELS = ["class", "order", "family", "genus", "species"]


def _dataset(**kw):
    """The repo's ``dataset`` section with ``kw`` set (validated like params.yaml)."""
    return section("dataset", kw)


def _read(**kw):
    return read_dataset(_dataset(**kw), LEVELS)


def _by_row(df: pd.DataFrame) -> dict:
    return {int(r["row"]): r for r in df.to_dict("records")}


# ---------------------------------------------------------------------------------------------- FishNet


def test_fishnet_fixture_has_the_real_header():
    assert (FIX / "fishnet_sample.csv").read_text().splitlines()[0].split(",") == FISHNET_HEADER


def test_fishnet_paths_species_synonym_source_and_slash_names():
    df, drops = _read(name="fishnet", metadata=str(FIX / "fishnet_sample.csv"))
    rows = _by_row(df)
    assert len(df) == 14 and drops.counts == {}
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
    df, _ = read_dataset(_dataset(name="fishnet", metadata=str(FIX / "fishnet_sample.csv"),
                                  columns={"order": "NewOrder"}), LEVELS)
    assert _by_row(df)[4]["order"] == "Perciformes"
    with pytest.raises(UserError, match="level 'tribe' has no column"):
        read_dataset(_dataset(name="fishnet", metadata=str(FIX / "fishnet_sample.csv")), ["class", "tribe"])


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
    df, drops = read_dataset(_dataset(name="inat2021", metadata=str(FIX / "inat2021_train.json")), levels7)
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


def test_table_reader_names_a_column_that_differs_only_by_case(tmp_path):
    """Column names match exactly; a header name that differs only by case is pointed at, with the fix."""
    path = tmp_path / "ann.csv"
    path.write_text("Image,Class,order,family,genus,Species\na/1.png,A,B,C,D,D e\n")
    with pytest.raises(UserError) as exc:
        _read(name="table", metadata=str(path), columns={})
    assert "column names match case-sensitively: map 'image' -> 'Image', 'class' -> 'Class', 'species' -> " \
           "'Species' with dataset.columns" in str(exc.value) and "\n" not in str(exc.value)
    df, _ = _read(name="table", metadata=str(path), columns={"image": "Image", "class": "Class", "species": "Species"})
    assert df.iloc[0]["species"] == "D e"


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
    expected = r"dataset.name='fishnets': expected one of synthetic, fishnet, bioscan1m"
    with pytest.raises(UserError, match=expected) as exc:
        _dataset(name="fishnets", metadata=str(tmp_path / "x.csv"))  # checked when the section is built
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match=r"x.csv: file not found"):
        _read(name="fishnet", metadata=str(tmp_path / "x.csv"))


# ---------------------------------------------------------------------------------------------- missing-value texts


def _fishnet_with(tmp_path: Path, edits: dict[int, dict[str, str]], raw: bytes | None = None) -> Path:
    """The FishNet fixture with ``{data row: {column: text}}`` edited (real header, real rows)."""
    with open(FIX / "fishnet_sample.csv", newline="") as f:
        rows = list(csv.reader(f))
    for row, values in edits.items():
        for col, value in values.items():
            rows[row][rows[0].index(col)] = value
    path = tmp_path / "fish.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def test_na_texts_are_missing_ranks_not_taxa(tmp_path):
    # R's write.csv writes NA unquoted; pandas writes nan; other exports None / null / N/A
    path = _fishnet_with(tmp_path, {1: {"Genus": "NA", "species": "NA"}, 4: {"Class": " nan "},
                                    5: {"Family": "None", "Order": "null"}, 7: {"Genus": "N/A"}})
    df, _ = _read(name="fishnet", metadata=str(path))
    rows = _by_row(df)
    assert pd.isna(rows[1]["genus"]) and pd.isna(rows[1]["species"]) and pd.isna(rows[4]["class"])
    assert pd.isna(rows[5]["family"]) and pd.isna(rows[5]["order"]) and pd.isna(rows[7]["genus"])
    assert not df[LEVELS].isin(["NA", "nan", "None", "null", "N/A"]).any(axis=None)
    # the list is the param: without it the texts are names again
    df, _ = _read(name="fishnet", metadata=str(path), na_values=[])
    assert _by_row(df)[1]["genus"] == "NA"


def test_bioscan_not_classified_is_one_of_the_na_values():
    df, _ = _read(name="bioscan1m", metadata=str(FIX / BIOSCAN_FILENAMES[0]), na_values=["not_classified"])
    assert pd.isna(_by_row(df)[3]["genus"])
    df, _ = _read(name="bioscan1m", metadata=str(FIX / BIOSCAN_FILENAMES[0]), na_values=[])
    assert _by_row(df)[3]["genus"] == "not_classified"


def test_inat_and_table_na_texts(tmp_path):
    levels7 = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]
    df, _ = read_dataset(_dataset(name="inat2021", metadata=str(FIX / "inat2021_homonyms.json")), levels7)
    by_file = {p.rsplit("/", 1)[-1]: r for p, r in zip(df["path"], df.to_dict("records"))}
    assert pd.isna(by_file["m7.jpg"]["genus"]) and pd.isna(by_file["m7.jpg"]["species"])  # genus "NA"
    assert by_file["m8.jpg"]["genus"] == "Sula" and pd.isna(by_file["m8.jpg"]["species"])  # epithet "nan"
    frame = _table_frame().assign(Gen=["None", "Corvus"], Sp=["Corvus corax", "null"])
    frame.to_parquet(tmp_path / "ann.parquet")
    columns = {"image": "file", "class": "Cls", "order": "Ord", "family": "Fam", "genus": "Gen", "species": "Sp"}
    df, _ = _read(name="table", metadata=str(tmp_path / "ann.parquet"), columns=columns)
    assert pd.isna(df["genus"].iloc[0]) and pd.isna(df["species"].iloc[1])


@pytest.mark.parametrize("value", [None, "NA", [None], [1]])
def test_na_values_must_be_a_list_of_strings(value):
    with pytest.raises(UserError, match=r"params.yaml dataset.na_values=.*: expected a list of strings"):
        _dataset(na_values=value)


# ---------------------------------------------------------------------------------------------- not UTF-8


def _with_bytes(src: Path, dst: Path, line: int, old: bytes, new: bytes) -> Path:
    lines = src.read_bytes().split(b"\n")
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    dst.write_bytes(b"\n".join(lines))
    return dst


def test_not_utf8_names_line_row_and_column(tmp_path):
    # Latin-1 e-acute on line 3 (data row 2): once reported as "line 1 (header)"
    bad = _with_bytes(FIX / "fishnet_sample.csv", tmp_path / "fish.csv", 3, b"Zebrasoma,", b"Zebras\xe9ma,")
    with pytest.raises(UserError, match=r"fish.csv: data row 2 \(line 3\), column 'Genus': not UTF-8 text "
                                        r"\(byte 0xE9 after 'Zebras'\)") as exc:
        _read(name="fishnet", metadata=str(bad))
    assert "\n" not in str(exc.value)


def test_not_utf8_far_down_and_after_a_multiline_field(tmp_path):
    # row 600 of a table with a quoted two-line field on row 2 (so line = row + 2); once pyarrow's
    # "CSV column #2" with no row
    rows = ["image,class,order,family,genus,species,note"]
    note = {2: "two\nlines"}
    rows += [f'a/{i}.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax,"{note.get(i, "x")}"' for i in range(1, 801)]
    data = "\n".join(rows).encode().replace(b"a/600.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax",
                                            b"a/600.png,Aves,Passeriformes,Corvidae,Corvus,Corvus cor\xf6x")
    (tmp_path / "ann.csv").write_bytes(data)
    with pytest.raises(UserError, match=r"ann.csv: data row 600 \(line 602\), column 'species': not UTF-8 text "
                                        r"\(byte 0xF6"):
        _read(name="table", metadata=str(tmp_path / "ann.csv"))


def test_not_utf8_in_an_unread_column_or_the_header(tmp_path):
    # BIOSCAN credits are often Latin-1; the column is never read, so the file still loads
    tsv = FIX / BIOSCAN_FILENAMES[0]
    bad = _with_bytes(tsv, tmp_path / BIOSCAN_FILENAMES[0], 3, b"CBG Photography", b"CBG Photograph\xe9")
    df, _ = _read(name="bioscan1m", metadata=str(bad))
    assert len(df) == 6
    bad = _with_bytes(tsv, tmp_path / "b.tsv", 1, b"\tauthor", b"\taut\xe9ur")
    with pytest.raises(UserError, match=r"b.tsv: line 1 \(header\), column 28: not UTF-8 text \(byte 0xE9"):
        read_dataset(_dataset(name="bioscan1m", metadata=str(bad)), LEVELS)


def test_not_utf8_in_parquet_and_json(tmp_path):
    frame = pd.DataFrame({"image": [b"a/1.png", b"a/\xe9.png"], "class": ["A", "A"], "order": ["B", "B"],
                          "family": ["C", "C"], "genus": ["D", "D"], "species": ["D e", "D e"]})
    frame.to_parquet(tmp_path / "ann.parquet")
    with pytest.raises(UserError, match=r"ann.parquet: data row 2, column 'image': not UTF-8 text \(byte 0xE9"):
        _read(name="table", metadata=str(tmp_path / "ann.parquet"))
    bad = _with_bytes(FIX / "inat2021_train.json", tmp_path / "train.json", 11, b"Danaus", b"D\xe4naus")
    column = bad.read_bytes().split(b"\n")[10].index(b"\xe4") + 1
    with pytest.raises(UserError, match=rf"train.json: line 11 column {column}: not UTF-8 text \(byte 0xE4\)"):
        _read(name="inat2021", metadata=str(bad))


# ---------------------------------------------------------------------------------------------- URLs


def test_table_image_url_is_a_counted_drop(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text("image,class,order,family,genus,species\n"
                    "a/1.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax\n"
                    "https://inaturalist-open-data.s3.amazonaws.com/photos/1/large.jpg,Aves,P,C,Corvus,Corvus corax\n"
                    "s3://bucket/a/2.png,Aves,P,C,Corvus,Corvus corax\n"
                    " gs://bucket/a/3.png ,Aves,P,C,Corvus,Corvus corax\n"
                    "HTTP://example.org/4.png,Aves,P,C,Corvus,Corvus corax\n"
                    "a/http_5.png,Aves,Passeriformes,Corvidae,Corvus,Corvus corax\n")
    df, drops = _read(name="table", metadata=str(path))
    assert df["path"].tolist() == ["a/1.png", "a/http_5.png"] and df["row"].tolist() == [1, 6]
    assert drops.counts == {"image_url": 4}
    assert [e["row"] for e in drops.examples["image_url"]] == [2, 3, 4, 5]
    assert drops.examples["image_url"][1]["path"] == "s3://bucket/a/2.png"
