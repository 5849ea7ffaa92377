"""A tiny world for the metric tests: five species in two classes of distinct colour, real shards and generated
images written as the shard and generate stages write them, and params with a small, quick probe."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import webdataset as wds
import yaml
from PIL import Image

from taxadiffusion.config import Params

from .params import make_params, params_dict

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
                    image = png(draw(lineage, i, res, seed=1 + (split == "test")))
                    sink.write({"__key__": f"{key:09d}", "png": image, "json": json.dumps(meta).encode()})
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


def write_params_yaml(tmp: Path, **evaluate) -> Path:
    """The same settings as ``metrics_params``, as a params.yaml for the stage CLIs."""
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict(metrics_overrides(**evaluate)), sort_keys=False))
    return path


def write_world(root: Path, real: list, generated: list, res: int = 16) -> tuple[Path, Path]:
    """Shards and generated images from explicit lists: ``real`` = ``[(lineage, split, uint8 image)]``,
    ``generated`` = ``[(lineage, uint8 image)]`` (image i of a taxon is its i-th entry); ``(shards, generated)``."""
    shards = root / "shards"
    index = {"levels": LEVELS, "resolution": res}
    for split in ("train", "test"):
        (shards / split).mkdir(parents=True, exist_ok=True)
        rows = [(k, lin, a) for k, (lin, s, a) in enumerate(real) if s == split]
        with wds.TarWriter(str(shards / split / "shard-000000.tar")) as sink:
            for key, lineage, image in rows:
                meta = {"lineage": dict(zip(LEVELS, lineage)), "row": key + 1, "path": f"{key}.png"}
                sink.write({"__key__": f"{key:09d}", "png": png(image), "json": json.dumps(meta).encode()})
        index[split] = {"shards": [f"{split}/shard-000000.tar"], "count": len(rows)}
    (shards / "index.json").write_text(json.dumps(index))
    return shards, write_generated_set(root, generated)


def write_generated_set(root: Path, generated: list) -> Path:
    """``root/generated`` in the generate layout from ``[(lineage, uint8 image)]`` (image i of a taxon is its i-th
    entry): PNGs and manifest.csv."""
    gen, rows, seen = root / "generated", [], {}
    for lineage, image in generated:
        taxon = seen.setdefault(tuple(lineage), len(seen))
        i = sum(r["taxon"] == taxon for r in rows)
        rel = f"{lineage[0]}/{lineage[-1].replace(' ', '_')}/{i:04d}.png"
        (gen / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(gen / rel)
        rows.append({**dict(zip(LEVELS, lineage)), "taxon": taxon, "index": i, "path": rel, "seed": i,
                     "sampler": "pndm", "steps": 10, "guidance": "taxaguide", "scale": 6.0})
    pd.DataFrame(rows).to_csv(gen / "manifest.csv", index=False)
    return gen


def write_fishnet_images(root: Path, size: tuple[int, int] = (40, 30)) -> Path:
    """The images tests/fixtures/fishnet_sample.csv names (``<Folder>/<basename of image>``, FishNet's layout), one
    colour per species plus noise, ``size`` (W, H) wide (not square: a stretch and a crop differ); the rows whose
    image is meant to be missing (``Satru_missing``, ``Satru_bad``) or outside the root (``..``) get none."""
    table = pd.read_csv(Path(__file__).resolve().parents[1] / "fixtures" / "fishnet_sample.csv", dtype=str,
                        keep_default_na=False)
    for i, row in enumerate(table.itertuples(index=False)):
        name = row.image.rsplit("/", 1)[-1]
        if row.Folder == ".." or name.startswith(("Satru_missing", "Satru_bad")):
            continue
        rng = np.random.default_rng(i)
        colour = np.random.default_rng(sum(map(ord, row.species.strip() or "none"))).integers(0, 256, 3)
        image = (colour + rng.normal(0, 25, (size[1], size[0], 3))).clip(0, 255).astype(np.uint8)
        (root / row.Folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / row.Folder / name, quality=95)
    return root


def trained_world(root: Path) -> tuple[Path, Path, Path, Path]:
    """``(root, shards, generated, probe)``: the shards (6 train + 3 test images per species; Aves 3 species,
    Reptilia 2), 4 generated images per species, and the probe trained on the shards."""
    from taxadiffusion.metrics.probe import fit_probe_on_shards

    shards = write_shards(root)
    gen = write_generated(root)
    params = metrics_params()
    fit_probe_on_shards(shards, root / "probe", LEVELS, params.probe, params.seed)
    return root, shards, gen, root / "probe"
