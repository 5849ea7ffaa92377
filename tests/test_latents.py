"""Latent chunks (taxadiffusion/training/latent_chunks.py) and the base stage's streaming VAE encode (latents.py,
base_stage.py) on the miniature SD1.5 of tests/helpers/sd15.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import webdataset as wds
from helpers.params import REPO, section
from helpers.sd15 import RESOLUTION, make_mini_sd15
from helpers.stages import free_port

from taxadiffusion.core.errors import UserError
from taxadiffusion.models.base import load_base
from taxadiffusion.training import latents as latents_mod
from taxadiffusion.training.base import prepare_base
from taxadiffusion.training.batches import posterior_sample
from taxadiffusion.training.latent_chunks import INDEX_FILE, ChunkWriter, LatentShards, LatentTable, write_index
from taxadiffusion.training.latents import _batches, encode_posterior, latent_source

LEVELS = ["class", "species"]


def _lineage(i: int) -> dict:
    return {"class": f"C{i % 2}", "species": f"G s{i % 3}"}


def _write(folder, n: int, views: int = 1, chunk_size: int = 3):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(n, views, 4, 2, 2, generator=g)
    std = torch.rand(n, views, 4, 2, 2, generator=g)
    writer = ChunkWriter(folder, chunk_size=chunk_size)
    for s in range(0, n, 2):  # batches that do not line up with the chunks
        writer.add(mean[s : s + 2], std[s : s + 2], [_lineage(i) for i in range(s, min(s + 2, n))])
    write_index(folder, "sd15", writer.finish())
    return mean.half().float(), std.half().float()


def test_chunks_round_trip_and_a_sample_draws_from_its_own_generator(tmp_path):
    mean, std = _write(tmp_path, 7)
    chunks = [f"train-00000{i}.safetensors" for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [INDEX_FILE] + chunks
    source = LatentShards(tmp_path, open_chunks=2)
    assert len(source) == 7 and [source.lineages[i] for i in (0, 4)] == [_lineage(0), _lineage(4)]
    idx = np.array([6, 0, 4, 4])
    rows_mean, rows_std = source.rows(idx)
    assert torch.equal(rows_mean.float(), mean[idx]) and torch.equal(rows_std.float(), std[idx])
    assert len(source._open) <= 2  # least recently used chunks are closed
    table = LatentTable(mean, std, [_lineage(i) for i in range(7)])  # the in-memory source: the same rows
    assert all(torch.equal(a.float(), b.float()) for a, b in zip(table.rows(idx), (rows_mean, rows_std)))
    a = posterior_sample(rows_mean[0], rows_std[0], torch.Generator().manual_seed(5))
    eps = torch.randn(4, 2, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, mean[6, 0] + std[6, 0] * eps)  # a fresh posterior sample, from the sample's generator
    assert torch.equal(posterior_sample(mean[6], None, torch.Generator()), mean[6, 0])  # deterministic encoder


def test_views_are_drawn_per_image(tmp_path):
    mean, std = _write(tmp_path, 5, views=2)
    rows_mean, rows_std = LatentShards(tmp_path).rows(np.arange(5))
    for i in range(5):
        got = posterior_sample(rows_mean[i], rows_std[i], torch.Generator().manual_seed(i))
        g = torch.Generator().manual_seed(i)
        view = int(torch.randint(0, 2, (), generator=g))
        eps = torch.randn(4, 2, 2, generator=g)
        assert torch.equal(got, mean[i, view] + std[i, view] * eps)


def test_damaged_chunks_are_one_line_errors(tmp_path):
    _write(tmp_path, 7)
    chunk = tmp_path / "train-000001.safetensors"
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(UserError, match=r"train-000001.safetensors: cannot read the latent chunk .*dvc repro -f base"):
        LatentShards(tmp_path)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    (tmp_path / INDEX_FILE).write_text(json.dumps({**index, "cached": 8}))
    with pytest.raises(UserError, match=r"latents.json: chunk counts \[3, 3, 1\]"):
        LatentShards(tmp_path)
    _write(tmp_path, 7)
    (tmp_path / INDEX_FILE).write_text(json.dumps({**index, "shape": [4, 4, 4]}))
    with pytest.raises(UserError, match=r"train-000000.safetensors: no mean tensor of shape \[3, 1, 4, 4, 4\]"):
        LatentShards(tmp_path)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    folder = make_mini_sd15(root / "sd")
    shards = root / "shards"
    (shards / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    with wds.TarWriter(str(shards / "train" / "shard-000000.tar")) as sink:
        for i, img in enumerate(images):
            sink.write({"__key__": f"{i:09d}", "png": img, "json": {"lineage": _lineage(i), "row": i, "path": "x"}})
    (shards / "index.json").write_text(json.dumps({"levels": LEVELS, "resolution": RESOLUTION, "train": {
        "shards": ["train/shard-000000.tar"], "count": 11}, "test": {"shards": [], "count": 0}}))
    cfg = section("model", {"preset": "sd15", "pretrained": str(folder)})
    return cfg, shards, images


def test_base_streams_the_posteriors_into_chunks(mini, tmp_path, monkeypatch):
    cfg, shards, images = mini
    monkeypatch.setattr(latents_mod, "ENCODE_BATCH", {"cpu": 4})  # several batches
    info = prepare_base(cfg, tmp_path / "base", shards, tmp_path / "lat", resolution=RESOLUTION)
    assert info["cached_latents"] == 11 and json.loads((tmp_path / "base/base.json").read_text())["resolution"] == 32
    source = latent_source(load_base(cfg), shards, tmp_path / "lat")
    assert isinstance(source, LatentShards) and len(source) == 11 and source.lineages[10] == _lineage(10)
    mean, std = encode_posterior(load_base(cfg), images)  # the whole split in one call
    got_mean, got_std = source.rows(np.arange(11))
    assert torch.allclose(got_mean[:, 0].float(), mean, atol=2e-3)
    assert torch.allclose(got_std[:, 0].float(), std, atol=2e-3)
    again = tmp_path / "again"
    prepare_base(cfg, tmp_path / "base2", shards, again, resolution=RESOLUTION)
    assert [p.read_bytes() for p in sorted((tmp_path / "lat").iterdir())] == \
        [p.read_bytes() for p in sorted(again.iterdir())], "base is not deterministic"


def test_resolution_other_than_the_base_is_a_one_line_error(mini, tmp_path):
    cfg, shards, _ = mini
    with pytest.raises(UserError) as info:
        prepare_base(cfg, tmp_path / "base", shards, tmp_path / "lat", resolution=64)
    message = str(info.value)
    assert "dataset.resolution=64" in message and "native resolution 32 px" in message
    assert "model.pretrained=" in message and "\n" not in message
    assert not (tmp_path / "lat").exists() and not (tmp_path / "base").exists()


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_base_writes_the_bytes_of_one_stream_of_batches(mini, tmp_path):
    """The DataLoader path stores what the earlier code stored: batches of 8 from the first image, through
    encode_posterior and the ChunkWriter, in shard order (the CPU default: no numerical change)."""
    cfg, shards, _ = mini
    prepare_base(cfg, tmp_path / "base", shards, tmp_path / "lat", resolution=RESOLUTION)
    base = load_base(cfg)
    writer = ChunkWriter(tmp_path / "ref")
    (tmp_path / "ref").mkdir()
    for images, lineages in _batches(shards, 8):
        mean, std = encode_posterior(base, images)
        writer.add(mean[:, None], std[:, None], lineages)
    write_index(tmp_path / "ref", "sd15", writer.finish())
    assert _files(tmp_path / "lat") == _files(tmp_path / "ref")


_RANKS = """
import sys
from accelerate import PartialState
from helpers.params import section
from taxadiffusion.training import latents
from taxadiffusion.training.base import prepare_base
latents.CHUNK_SIZE, latents.ENCODE_BATCH = 4, {"cpu": 3}
pretrained, shards, out = sys.argv[1:]
state = PartialState(cpu=True)
assert state.num_processes == 2
prepare_base(section("model", {"preset": "sd15", "pretrained": pretrained}), out + "/base", shards, out + "/lat",
             resolution=%d, state=state)
"""


@pytest.mark.slow
def test_two_processes_write_the_chunks_of_one(mini, tmp_path, monkeypatch):
    """torchrun, 2 gloo ranks on the CPU: each encodes every other chunk into rank 0's folder, rank 0 indexes
    them; the files are byte for byte those of one process (chunks of 4, batches of 3: 3 chunks, ragged)."""
    cfg, shards, _ = mini
    monkeypatch.setattr(latents_mod, "CHUNK_SIZE", 4)
    monkeypatch.setattr(latents_mod, "ENCODE_BATCH", {"cpu": 3})
    prepare_base(cfg, tmp_path / "one" / "base", shards, tmp_path / "one" / "lat", resolution=RESOLUTION)
    script = tmp_path / "ranks.py"
    script.write_text(_RANKS % RESOLUTION)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script), cfg.pretrained, str(shards), str(tmp_path / "two")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _files(tmp_path / "one" / "lat"), _files(tmp_path / "two" / "lat")
    assert sorted(one) == [INDEX_FILE] + [f"train-00000{i}.safetensors" for i in range(3)]
    assert one == two
    assert _files(tmp_path / "one" / "base") == _files(tmp_path / "two" / "base")
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["base", "lat"]  # no temporaries left
