"""Evaluation inputs: a tiny world of real shards + generated images (helpers reused by the other metric
tests), and the one-line errors for bad inputs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
import yaml
from params_util import make_params, params_dict
from PIL import Image

from taxadiffusion.config import Params
from taxadiffusion.core.errors import UserError
from taxadiffusion.metrics.data import read_generated, read_real

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

LEVELS = ["class", "order", "family", "genus", "species"]
# Two classes of distinct colour; species differ by the position of a bright bar.
WORLD = [
    ("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax"),
    ("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus monedula"),
    ("Aves", "Passeriformes", "Paridae", "Parus", "Parus major"),
    ("Reptilia", "Squamata", "Boidae", "Boa", "Boa constrictor"),
    ("Reptilia", "Squamata", "Boidae", "Boa", "Boa imperator"),
]
CLASS_COLOUR = {"Aves": (200, 60, 40), "Reptilia": (40, 90, 200)}


def draw(lineage: tuple, i: int, res: int = 16, seed: int = 0) -> np.ndarray:
    sp = [w[-1] for w in WORLD].index(lineage[-1])
    rng = np.random.default_rng([sp, i, seed])
    img = np.empty((res, res, 3), np.float64)
    img[:] = CLASS_COLOUR[lineage[0]]
    bar = sp * res // len(WORLD)
    img[:, bar : bar + res // 5] = 240
    img += rng.normal(0, 20, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(root: Path, n_train: int = 6, n_test: int = 3, res: int = 16) -> Path:
    """``data/shards`` as the shard stage writes it (docs/architecture.md), with webdataset.TarWriter."""
    shards = root / "shards"
    index = {"levels": LEVELS, "resolution": res}
    key = 0
    for split, n in (("train", n_train), ("test", n_test)):
        (shards / split).mkdir(parents=True, exist_ok=True)
        name = f"{split}/shard-000000.tar"
        with wds.TarWriter(str(shards / name)) as sink:
            for lineage in WORLD:
                for i in range(n):
                    meta = {"lineage": dict(zip(LEVELS, lineage)), "row": key + 1, "path": f"{key}.png"}
                    sink.write({"__key__": f"{key:09d}", "png": png(draw(lineage, i, res, seed=1 + (split == "test"))),
                                "json": json.dumps(meta).encode()})
                    key += 1
        index[split] = {"shards": [name], "count": n * len(WORLD)}
    (shards / "index.json").write_text(json.dumps(index))
    return shards


def write_generated(root: Path, n: int = 4, res: int = 16, seed: int = 7, skip: tuple = ()) -> Path:
    """``data/generated`` as the generate stage writes it: PNGs, manifest.csv, plan.csv."""
    gen = root / "generated"
    rows, plan = [], []
    for t, lineage in enumerate(w for w in WORLD if w[-1] not in skip):
        for i in range(n):
            rel = f"{lineage[0]}/{lineage[-1].replace(' ', '_')}/{i:04d}.png"
            (gen / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw(lineage, i, res, seed=seed)).save(gen / rel)
            rows.append({**dict(zip(LEVELS, lineage)), "taxon": t, "index": i, "path": rel, "seed": seed + i,
                         "sampler": "pndm", "steps": 10, "guidance": "taxaguide", "scale": 6.0})
        plan.append({**dict(zip(LEVELS, lineage)), "n_images": n, "capped": False})
    pd.DataFrame(rows).to_csv(gen / "manifest.csv", index=False)
    pd.DataFrame(plan).to_csv(gen / "plan.csv", index=False)
    return gen


def metrics_overrides(**evaluate) -> dict:
    """The repo's params.yaml with a small, quick probe and ``evaluate`` settings for this tiny world."""
    return {"seed": 0, "probe": {"steps": 40, "batch_size": 32, "lr": 0.003, "width": 8},
            "evaluate": {"min_images_for_fid": 5, "batch_size": 16, **evaluate}}


def metrics_params(**evaluate) -> Params:
    params = make_params(metrics_overrides(**evaluate))
    assert params.level_names == LEVELS
    return params


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
    assert a == read_real(shards, ["train", "test"], LEVELS).content_hash(classes["Aves"]) != real.content_hash(classes["Reptilia"])


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


def write_params_yaml(tmp: Path, **evaluate) -> Path:
    """The same settings as ``metrics_params``, as a params.yaml for the stage CLIs."""
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict(metrics_overrides(**evaluate)), sort_keys=False))
    return path


def run_stage(script: str, *args, tmp: Path):
    """Run ``python stages/<script>`` from the repository root, offline, one thread."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp / "torch-home")}
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, f"stages/{script}", *map(str, args)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)


def run_stage_here(script: str, *args, monkeypatch, capsys) -> tuple[int, str]:
    """Run ``stages/<script>`` as ``__main__`` in this process (no interpreter start-up): exit code, stderr."""
    import runpy
    import sys

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(sys, "argv", [f"stages/{script}", *map(str, args)])
    capsys.readouterr()
    try:
        runpy.run_path(str(repo / "stages" / script), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err
