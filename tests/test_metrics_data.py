"""Evaluation inputs: the tiny world of real shards + generated images (tests/helpers/metrics_world.py) is read
back as written, and bad inputs are one-line errors."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.metrics_world import LEVELS, WORLD, write_generated, write_shards

from taxadiffusion.core.errors import UserError
from taxadiffusion.metrics.data import read_generated, read_real

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------------------ tests


def test_real_shards_are_read_in_key_order_with_lineages(tmp_path):
    shards = write_shards(tmp_path, n_train=2, n_test=1)
    real = read_real(shards, ["train", "test"], LEVELS)
    assert len(real) == 3 * len(WORLD)
    classes = real.by_class()
    assert sorted(classes) == ["Aves", "Reptilia"] and len(classes["Aves"]) == 9
    keys = [real.keys[i] for i in classes["Aves"]]
    assert keys == sorted(keys)
    img = real.decode(classes["Reptilia"][:2])
    assert img.shape == (2, 16, 16, 3) and img.dtype == np.uint8
    assert real.decode([0], (32, 32)).shape == (1, 32, 32, 3)
    # Content hash: same data, same hash; any byte changes it.
    a = real.content_hash(classes["Aves"])
    again = read_real(shards, ["train", "test"], LEVELS)
    assert a == again.content_hash(classes["Aves"]) != real.content_hash(classes["Reptilia"])


def test_generated_rows_are_checked_one_line(tmp_path):
    gen = write_generated(tmp_path, n=2)
    images, manifest = read_generated(gen, LEVELS)
    assert len(images) == 2 * len(WORLD) and len(manifest) == len(images)
    table = pd.read_csv(gen / "manifest.csv")
    table.loc[3, "path"] = "Aves/missing.png"
    table.to_csv(gen / "manifest.csv", index=False)
    with pytest.raises(UserError, match=r"manifest.csv: line 5: path 'Aves/missing.png': file not found"):
        read_generated(gen, LEVELS)
    table.drop(columns=["genus"]).to_csv(gen / "manifest.csv", index=False)
    with pytest.raises(UserError, match=r"missing column\(s\) \['genus'\]"):
        read_generated(gen, LEVELS)


def test_corrupt_image_and_level_mismatch_are_user_errors(tmp_path):
    gen = write_generated(tmp_path, n=1)
    (gen / "Aves/Corvus_corax/0000.png").write_bytes(b"not a png")
    images, _ = read_generated(gen, LEVELS)
    with pytest.raises(UserError, match=r"line 2 \(Aves/Corvus_corax/0000.png\): cannot decode image"):
        images.decode(range(len(images)))
    shards = write_shards(tmp_path, n_train=1, n_test=1)
    with pytest.raises(UserError, match=r"index.json: levels .* differ from params.yaml levels"):
        read_real(shards, ["test"], ["class", "species"])



def test_grid_labels_wrap_long_binomials_instead_of_cutting_them():
    """The sample grids cut names at 24 characters ("Hydrolagus macrophthalmu"); they wrap now."""
    from taxadiffusion.metrics.grids import _label_lines, make_grid

    assert _label_lines("Hydrolagus macrophthalmus", 5) == ["Hydrolagus", "macrophthalmus"]
    assert _label_lines("Carcharhinus amblyrhynchoides", 1) == ["Carcharhinus..."]  # a visible cut when it must
    lines = _label_lines("A" * 60, 2)
    assert len(lines) == 2 and lines[-1].endswith("...")
    tiles = np.zeros((2, 16, 16, 3), np.uint8)
    assert make_grid([("Hydrolagus macrophthalmus", tiles, tiles)], (16, 16)).height > 64
