"""``shard``: preprocessing modes, deterministic tar shards written under temp names, and the readers."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.params import make_params, params_dict
from PIL import Image

from taxadiffusion.core.errors import UserError
from taxadiffusion.data import image_files as I
from taxadiffusion.data import shard as shard_mod
from taxadiffusion.data.prepare import prepare
from taxadiffusion.data.shard import write_shards
from taxadiffusion.data.shard_reader import ShardImages, iter_shard_samples, load_split_arrays

REPO = Path(__file__).resolve().parents[1]
RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)


def _close(a, b, tol=12) -> bool:
    return bool(np.all(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)) <= tol))


# ---------------------------------------------------------------------------------------------- preprocessing


def _three_bands(w=60, h=20) -> Image.Image:
    """Green | red | blue vertical bands of equal width."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 3] = GREEN
    a[:, w // 3: 2 * w // 3] = RED
    a[:, 2 * w // 3:] = BLUE
    return Image.fromarray(a)


def test_center_crop_keeps_the_middle_square():
    out = np.asarray(I.preprocess(_three_bands(), "center_crop", 16))
    assert out.shape == (16, 16, 3)
    assert _close(out[:, 2:-2], RED)


def test_resize_is_non_uniform_and_keeps_everything():
    out = np.asarray(I.preprocess(_three_bands(), "resize", 12))
    assert out.shape == (12, 12, 3)
    assert _close(out[:, 0], GREEN) and _close(out[:, 6], RED) and _close(out[:, -1], BLUE)


def test_pad_white_gives_white_borders():
    tall = Image.new("RGB", (20, 40), RED)
    out = np.asarray(I.preprocess(tall, "pad_white", 16))
    assert _close(out[:, :3], WHITE, 2) and _close(out[:, -3:], WHITE, 2)  # left/right: padding
    assert _close(out[:, 6:10], RED)
    wide = np.asarray(I.preprocess(Image.new("RGB", (40, 20), RED), "pad_white", 16))
    assert _close(wide[:3], WHITE, 2) and _close(wide[-3:], WHITE, 2)  # top/bottom


def test_bbox_crop_comes_first():
    a = np.full((30, 40, 3), BLUE, dtype=np.uint8)
    a[4:20, 8:32] = RED  # bbox x=8 y=4 w=24 h=16
    out = np.asarray(I.preprocess(Image.fromarray(a), "resize", 8, bbox=(8, 4, 24, 16)))
    assert _close(out, RED)
    with pytest.raises(ValueError, match="outside"):
        I.preprocess(Image.fromarray(a), "resize", 8, bbox=(100, 100, 5, 5))


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert _close(np.asarray(I.preprocess(rgba, "resize", 4)), WHITE, 0)


def test_jpeg_draft_decode_matches_full_decode(tmp_path):
    yy, xx = np.mgrid[0:600, 0:800]
    a = np.stack([xx * 255 // 800, yy * 255 // 600, np.full_like(xx, 90)], -1).astype(np.uint8)
    a[200:300, 400:560] = RED  # bbox x=400 y=200 w=160 h=100
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=95)
    for mode, bbox in [("center_crop", None), ("pad_white", None), ("resize", (400, 200, 160, 100))]:
        fast = np.asarray(I.load_preprocessed(tmp_path / "big.jpg", mode, 32, bbox), dtype=int)
        with Image.open(tmp_path / "big.jpg") as im:
            full = np.asarray(I.preprocess(im.convert("RGB"), mode, 32, bbox), dtype=int)
        assert fast.shape == (32, 32, 3)
        assert np.abs(fast - full).mean() < 3, mode
    assert _close(np.asarray(I.load_preprocessed(tmp_path / "big.jpg", "resize", 16, (400, 200, 160, 100)))[2:-2, 2:-2],
                  RED, 40)


def test_exif_rotation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = RED
    a[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "rot.jpg") as im:
        assert I.oriented_size(im) == (20, 40)
    out = np.asarray(I.load_preprocessed(tmp_path / "rot.jpg", "resize", 8))
    assert _close(out[1], RED, 40) and _close(out[-2], BLUE, 40)  # left half is now on top


# ---------------------------------------------------------------------------------------------- shards


def _dataset(tmp_path: Path, n_per_species=(1, 3, 5)) -> dict:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    lines = ["image,class,order,family,genus,species"]
    for s, n in enumerate(n_per_species):
        for i in range(n):
            path = root / f"sp{s}" / f"{i}.{'jpg' if i % 2 else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
            lines.append(f"sp{s}/{path.name},Insecta,Order{s % 2},Fam{s},Gen{s},Gen{s} ep{s}")
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    return {"name": "table", "metadata": str(tmp_path / "ann.csv"), "images": str(root), "resolution": 16}


def _prepared(tmp_path: Path, per_shard=2, **dataset):
    params = make_params({"dataset": {**_dataset(tmp_path), **dataset}, "shard.samples_per_shard": per_shard,
                          "prepare.check_images": "decode"})
    prepare(params.dataset, params.prepare, params.level_names, tmp_path / "prepared", show_progress=False)
    return params


def _shards(params, prepared: Path, out: Path, **kw) -> dict:
    return write_shards(params.dataset, params.shard, params.level_names, prepared, out, **kw)


def _members(tar_path: Path) -> list[str]:
    with tarfile.open(tar_path) as tf:
        return tf.getnames()


def test_shards_follow_the_contract_and_are_byte_identical(tmp_path, monkeypatch):
    params = _prepared(tmp_path)
    a = _shards(params, tmp_path / "prepared", tmp_path / "a", show_progress=False)
    monkeypatch.setattr(shard_mod, "available_cores", lambda: 5)  # another thread count: the same bytes
    b = _shards(params, tmp_path / "prepared", tmp_path / "b", show_progress=False)
    assert a == b == json.loads((tmp_path / "a" / "index.json").read_text())
    assert a["levels"] == ["class", "order", "family", "genus", "species"] and a["resolution"] == 16
    assert a["train"]["count"] + a["test"]["count"] == 9
    assert a["test"]["count"] == 0 + 1 + 1  # round(n * 0.2) clipped to [1, n - 1]; the single image stays in train
    assert a["train"]["shards"] == ["train/shard-000000.tar", "train/shard-000001.tar", "train/shard-000002.tar",
                                    "train/shard-000003.tar"]
    for split in ("train", "test"):
        for name in a[split]["shards"]:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with tarfile.open(tmp_path / "a" / "train" / "shard-000000.tar") as tf:
        assert {(m.mtime, m.uname) for m in tf.getmembers()} == {(0, "taxadiffusion")}  # no wall-clock stamps
    names = _members(tmp_path / "a" / "train" / "shard-000000.tar")
    assert len(names) == 4 and names[0].endswith(".json") and names[1].endswith(".png")
    assert all(len(n.split(".")[0]) == 9 for n in names)
    assert not [p for p in (tmp_path / "a").rglob("*") if p.name.startswith(".tmp")]


def test_shards_appear_under_the_final_name_only_when_complete(tmp_path, monkeypatch):
    """The shard folder is built under a temporary name and swapped in whole (taxadiffusion/data/shard.py): nothing
    is under ``out`` until every shard and ``index.json`` is complete, and a failed run keeps the old shards."""
    params = _prepared(tmp_path)
    out = tmp_path / "out"
    swaps = []
    real_replace = os.replace

    def spy(src, dst):
        if Path(dst) == out:
            src = Path(src)
            assert src.name.startswith(".tmp-") and not out.exists()
            index = json.loads((src / "index.json").read_text())
            for name in index["train"]["shards"] + index["test"]["shards"]:
                assert len(_members(src / name)) > 0  # a complete, readable tar
            swaps.append(src.name)
        else:
            assert not str(dst).startswith(str(out) + os.sep)  # no file is renamed into the final folder
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    index = _shards(params, tmp_path / "prepared", out, show_progress=False)
    monkeypatch.undo()
    assert len(swaps) == 1 and len(index["train"]["shards"]) == 4
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (Path(params.dataset.images) / "sp2" / "3.jpg").unlink()  # a rerun that fails part-way
    params.shard.samples_per_shard = 1
    with pytest.raises(UserError, match="cannot preprocess image"):
        _shards(params, tmp_path / "prepared", out, show_progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # no mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.csv", "images", "out", "prepared"]  # no temps


def test_readers_return_table_order_images_and_lineages(tmp_path):
    import pandas as pd

    params = _prepared(tmp_path, per_shard=3)
    _shards(params, tmp_path / "prepared", tmp_path / "out", show_progress=False)
    table = pd.read_parquet(tmp_path / "prepared" / "table.parquet")
    train = table[table["split"] == "train"]
    samples = list(iter_shard_samples(tmp_path / "out", "train"))
    assert [k for k, _, _ in samples] == [f"{i:09d}" for i in train.index]
    key, img, meta = samples[0]
    assert img.mode == "RGB" and img.size == (16, 16)
    images = ShardImages(tmp_path / "out", "train")  # random access (base's DataLoader): the same pixels, in order
    assert len(images) == len(samples) and np.array_equal(images[0], np.asarray(img))
    assert [images.lineage(i) for i in range(len(images))] == [m["lineage"] for _, _, m in samples]
    first = train.iloc[0]
    assert meta == {"lineage": {lv: first[lv] for lv in ["class", "order", "family", "genus", "species"]},
                    "row": int(first["row"]), "path": first["path"]}
    # the PNG is lossless: the stored pixels equal a fresh preprocessing of the source image
    fresh = I.load_preprocessed(Path(params.dataset.images) / first["path"], "center_crop", 16)
    assert np.array_equal(np.asarray(img), np.asarray(fresh))
    arrays, lineages = load_split_arrays(tmp_path / "out", "test")
    assert arrays.shape == (2, 16, 16, 3) and arrays.dtype == np.uint8
    assert [lin["species"] for lin in lineages] == table.loc[table["split"] == "test", "species"].tolist()


def test_stale_shards_of_a_bigger_run_are_removed(tmp_path):
    params = _prepared(tmp_path, per_shard=1)
    _shards(params, tmp_path / "prepared", tmp_path / "out", show_progress=False)
    assert len(list((tmp_path / "out" / "train").glob("shard-*.tar"))) == 7
    params.shard.samples_per_shard = 100
    _shards(params, tmp_path / "prepared", tmp_path / "out", show_progress=False)
    assert [p.name for p in (tmp_path / "out" / "train").glob("shard-*.tar")] == ["shard-000000.tar"]


def test_pad_white_through_the_stage_function(tmp_path):
    root = tmp_path / "img"
    root.mkdir()
    Image.new("RGB", (60, 20), RED).save(root / "a.jpg", quality=95)
    Image.new("RGB", (60, 20), RED).save(root / "b.jpg", quality=95)
    (tmp_path / "ann.csv").write_text("image,class,order,family,genus,species\n"
                                      "a.jpg,C,O,F,G,G s\nb.jpg,C,O,F,G,G s\n")
    params = make_params({"dataset": {"name": "table", "metadata": str(tmp_path / "ann.csv"), "images": str(root),
                                      "resolution": 24, "preprocess": "pad_white"}})
    prepare(params.dataset, params.prepare, params.level_names, tmp_path / "prepared", show_progress=False)
    _shards(params, tmp_path / "prepared", tmp_path / "out", show_progress=False)
    arrays, _ = load_split_arrays(tmp_path / "out", "train")
    assert _close(arrays[0, :4], WHITE, 3) and _close(arrays[0, -4:], WHITE, 3)
    assert _close(arrays[0, 11:13], RED, 30)


def test_image_gone_after_prepare_is_a_one_line_error(tmp_path):
    params = _prepared(tmp_path)
    (Path(params.dataset.images) / "sp1" / "1.jpg").unlink()
    with pytest.raises(UserError, match=r"sp1/1.jpg: table row \d+ \(annotation row 3\): cannot preprocess image"):
        _shards(params, tmp_path / "prepared", tmp_path / "out", show_progress=False)
    assert not list((tmp_path / "out").rglob("*.tar"))  # the shard in progress was not left under its final name


def test_bad_preprocess_param_and_missing_table(tmp_path):
    with pytest.raises(UserError, match=r"dataset.preprocess='squash': expected one of center_crop, resize, pad_white"):
        make_params({"dataset.preprocess": "squash"})  # validated when the params are built
    with pytest.raises(UserError, match=r"table.parquet: not found \(run the prepare stage first\)"):
        _shards(make_params(), tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_stage_script_end_to_end_and_one_line_error(tmp_path):
    dataset = _dataset(tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params_dict({"dataset": dataset, "shard.samples_per_shard": 4}),
                                          sort_keys=False))  # sorted keys would list the levels alphabetically
    run = lambda script, *extra: subprocess.run(  # noqa: E731
        [sys.executable, str(REPO / "stages" / script), "--params", str(params_file), *extra],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    missing = run("shard.py", "--prepared", str(tmp_path / "nowhere"), "--out", str(tmp_path / "shards"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere/table.parquet" in lines[0]
    assert run("prepare.py", "--out", str(tmp_path / "prepared")).returncode == 0
    done = run("shard.py", "--prepared", str(tmp_path / "prepared"), "--out", str(tmp_path / "shards"))
    assert done.returncode == 0, done.stderr
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["train"]["count"] == 7 and len(index["train"]["shards"]) == 2


# ---------------------------------------------------------------------------------------------- scientific image modes
# 16-bit, 32-bit int and float images keep their range (docs/datasets.md §3): a PIL convert("RGB") clips them to
# white or black.

W_RAMP = 64


def _tiff_rgb16(path: Path, a: np.ndarray) -> None:
    """An uncompressed 48-bit RGB TIFF written by hand (Pillow reads such files but cannot write them)."""
    h, w, _ = a.shape
    data = a.astype("<u2").tobytes()
    bps_at = 8 + len(data)  # header | pixels | BitsPerSample values (3 shorts) | IFD
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps_at), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, 8),
            (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        ifd += struct.pack("<HHIHH" if kind == 3 and count == 1 else "<HHII", tag, kind, count, value,
                           *((0,) if kind == 3 and count == 1 else ()))
    path.write_bytes(b"II*\x00" + struct.pack("<I", bps_at + 6) + data + struct.pack("<3H", 16, 16, 16) + ifd
                     + struct.pack("<I", 0))


def _ramp(lo: float, hi: float, dtype) -> np.ndarray:
    """A horizontal ramp lo -> hi, 64 x 64."""
    return np.tile(np.linspace(lo, hi, W_RAMP), (W_RAMP, 1)).astype(dtype)


def _write_scientific_images(root: Path) -> dict[str, str]:
    """One ramp image per scientific PIL mode; returns {file: the mode Pillow opens it as}."""
    root.mkdir(parents=True, exist_ok=True)
    u16 = _ramp(0, 65535, np.uint16)
    Image.fromarray(u16).save(root / "gray16.png")  # I;16 (microscopy, scientific cameras)
    Image.fromarray(u16).save(root / "gray16.tif")
    Image.frombytes("I;16B", (W_RAMP, W_RAMP), u16.astype(">u2").tobytes()).save(root / "gray16b.tif")
    Image.fromarray(_ramp(0.0, 1.0, np.float32)).save(root / "float.tif")  # F: reflectance 0..1
    Image.fromarray(_ramp(-50_000, 950_000, np.int32)).save(root / "int32.tif")  # I
    _tiff_rgb16(root / "rgb16.tif", np.stack([u16, u16 // 2, 65535 - u16], axis=-1))
    nan = _ramp(0.0, 1.0, np.float32)
    nan[3, 5] = np.nan
    Image.fromarray(nan).save(root / "float_nan.tif")
    modes = {}
    for path in sorted(root.iterdir()):
        with Image.open(path) as im:
            modes[path.name] = im.mode
    return modes


def _assert_ramp(channel: np.ndarray, name: str) -> None:
    """Brightness increases along the ramp and spans most of 0..255 (a clipped image is flat white or black)."""
    profile = channel.astype(float).mean(axis=0)
    assert np.all(np.diff(profile[::4]) > 0), (name, profile.round())
    assert profile[0] < 30 and profile[-1] > 225, (name, profile.round())


@pytest.mark.parametrize("name", ["gray16.png", "gray16.tif", "gray16b.tif", "float.tif", "int32.tif", "rgb16.tif"])
def test_scientific_modes_keep_their_range(tmp_path, name):
    modes = _write_scientific_images(tmp_path)
    assert modes == {"float.tif": "F", "float_nan.tif": "F", "gray16.png": "I;16", "gray16.tif": "I;16",
                     "gray16b.tif": "I;16B", "int32.tif": "I", "rgb16.tif": "RGB"}
    out = np.asarray(I.load_preprocessed(tmp_path / name, "center_crop", 32))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    _assert_ramp(out[..., 0], name)
    if name == "rgb16.tif":
        _assert_ramp(out[:, ::-1, 2], name)  # the blue ramp runs the other way
    else:
        assert np.array_equal(out[..., 0], out[..., 2])  # gray stays gray
    assert I.check_image(tmp_path / name, "decode") == ("ok", None, None)


def test_rescaling_rules_and_modes_that_stay_as_before():
    u16 = Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(I.to_rgb(u16))[0, :, 0].tolist() == [0, 1, 128, 255]  # bit depth: v / 65535 * 255
    f = Image.fromarray(np.array([[2.0, 2.5, 3.0]], dtype=np.float32))
    assert np.asarray(I.to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]  # per image: min -> 0, max -> 255
    flat = Image.fromarray(np.full((2, 2), 7, dtype=np.int32))
    assert np.asarray(I.to_rgb(flat)).max() == 0
    with pytest.raises(I.NonFinitePixels, match=r"mode F: 1 of 3 pixels are NaN or infinite"):
        I.to_rgb(Image.fromarray(np.array([[0.0, np.inf, 1.0]], dtype=np.float32)))
    rng = np.random.default_rng(0)
    for mode in ("1", "L", "P"):  # 8-bit and palette modes: PIL's own conversion, as before
        im = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).convert(mode)
        assert np.array_equal(np.asarray(I.to_rgb(im)), np.asarray(im.convert("RGB")))


def test_scientific_images_through_the_prepare_and_shard_stages(tmp_path):
    """16-bit PNG / TIFF, float and int TIFF ramps come out of the real stage scripts as ramps; a NaN pixel is a
    counted drop naming the mode."""
    from helpers.stages import run_stage

    root = tmp_path / "images"
    modes = _write_scientific_images(root)
    lines = ["image,class,order,family,genus,species"] + [f"{n},Insecta,Diptera,Phoridae,Megaselia,Megaselia scalaris"
                                                          for n in modes]
    (tmp_path / "ann.csv").write_text("\n".join(lines) + "\n")
    dataset = {"name": "table", "metadata": str(tmp_path / "ann.csv"), "images": str(root), "resolution": 32}
    params = params_dict({"dataset": dataset, "prepare.check_images": "decode"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_stage("prepare.py", "--params", "params.yaml", "--out", "prepared", cwd=tmp_path)
    run_stage("shard.py", "--params", "params.yaml", "--prepared", "prepared", "--out", "shards", cwd=tmp_path)
    report = json.loads((tmp_path / "prepared" / "report.json").read_text())
    assert report["dropped"] == {"nonfinite_pixels": 1} and report["rows_kept"] == 6
    assert report["examples"]["nonfinite_pixels"][0]["detail"] == "mode F: 1 of 4096 pixels are NaN or infinite"
    seen = {}
    for split in ("train", "test"):
        for _key, img, meta in iter_shard_samples(tmp_path / "shards", split, as_array=True):
            seen[meta["path"]] = img
    assert sorted(seen) == sorted(n for n in modes if n != "float_nan.tif")
    for name, img in seen.items():
        _assert_ramp(img[..., 0], f"{name} ({modes[name]})")
