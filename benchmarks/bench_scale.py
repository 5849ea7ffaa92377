"""Scale benchmark (issue 11): `base` + `train@<level 0>` at N = 2,000 / 20,000 / 100,000 training images.

For each N: writes N generated 32 px training images as WebDataset shards (untimed, the shard stage's layout),
then runs the real stage scripts in fresh processes on the miniature SD1.5 of ``tests/helpers/sd15.py`` (the
``sd15`` preset: VAE posteriors streamed into latent chunks by ``base``, training streaming them):

1. ``stages/base.py``: wall seconds and peak RSS (``wait4`` rusage of that process);
2. ``stages/train.py --level <level 0>`` for a fixed number of steps (no checkpoints): seconds per step (the
   loop's own time, from the scratch folder's ``timing.json``), wall seconds and peak RSS.

Goal: peak RSS of both at 100K <= 1.2x that at 2K; seconds per step flat in N; base time linear in N.

    python benchmarks/bench_scale.py [--sizes 2000 20000 100000] [--steps 40] [--batch 12] [--work /tmp/bench-scale]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import webdataset as wds
import yaml

from taxadiffusion.config import read_params_dict

REPO = Path(__file__).resolve().parents[1]
PER_SHARD = 1000
SPECIES = 200  # lineages cycle through this many species (4 classes, 20 orders, 50 families, 100 genera)


def _fixture():
    spec = importlib.util.spec_from_file_location("sd15", REPO / "tests" / "helpers" / "sd15.py")
    module = importlib.util.module_from_spec(spec)  # the tests' miniature SD1.5 builder, not a package module
    spec.loader.exec_module(module)
    return module


def lineage(i: int) -> dict:
    s = i % SPECIES
    return {"class": f"Class{s % 4}", "order": f"Order{s % 20}", "family": f"Family{s % 50}",
            "genus": f"Genus{s % 100}", "species": f"Genus{s % 100} epithet{s}"}


def write_shards(out: Path, n: int, resolution: int) -> Path:
    """N train images (smooth seeded colour fields, so PNGs stay small) + 1 test image, and ``index.json``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:resolution, 0:resolution] / resolution
    names = []
    (out / "train").mkdir(parents=True)
    for shard_no, start in enumerate(range(0, n, PER_SHARD)):
        name = f"train/shard-{shard_no:06d}.tar"
        with wds.TarWriter(str(out / name)) as sink:
            for i in range(start, min(start + PER_SHARD, n)):
                a = rng.random((3, 3))
                img = np.stack([a[c, 0] * yy + a[c, 1] * xx + a[c, 2] for c in range(3)], -1) * 127
                meta = {"lineage": lineage(i), "row": i + 1, "path": f"{i}.png"}
                sink.write({"__key__": f"{i:09d}", "png": img.astype(np.uint8), "json": meta})
        names.append(name)
    index = {"levels": list(lineage(0)), "resolution": resolution, "preprocess": "center_crop",
             "samples_per_shard": PER_SHARD, "train": {"shards": names, "count": n},
             "test": {"shards": [], "count": 0}}
    (out / "index.json").write_text(json.dumps(index))
    return out


def _timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process, from its own rusage."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    log = cwd / f"{Path(cmd[1]).stem}.log"  # a file, not a pipe: nobody reads a pipe while wait4 waits
    t0 = time.time()
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return time.time() - t0, usage.ru_maxrss / 1024  # Linux: KiB


def bench_size(work: Path, mini: Path, n: int, steps: int, batch: int, resolution: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_shards(work / "shards", n, resolution)
    params = read_params_dict(REPO / "params.yaml")
    params["model"].update(preset="sd15", pretrained=str(mini), cache_latents=True, cond_layers=1, cond_heads=4,
                           cond_ff=64)
    params["dataset"]["resolution"] = resolution
    params["train"].update(steps=steps, batch_size=batch)
    params["compute"].update(checkpoint_every=0, log_every=steps)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    level0 = next(iter(params["levels"]))
    py = [sys.executable]
    base_s, base_mb = _timed(py + [str(REPO / "stages/base.py"), "--shards", "shards", "--out", "models/base",
                                   "--latents", "latents"], work)
    train_s, train_mb = _timed(py + [str(REPO / "stages/train.py"), "--level", level0, "--parent", "models/base",
                                     "--out", f"models/{level0}", "--shards", "shards", "--latents", "latents",
                                     "--scratch", "scratch", "--log-dir", "log"], work)
    run = json.loads((work / "scratch" / "timing.json").read_text())
    latents_mb = sum(p.stat().st_size for p in (work / "latents").iterdir()) / 1e6
    return {"n": n, "base_s": round(base_s, 1), "base_rss_mb": round(base_mb), "latents_mb": round(latents_mb, 1),
            "train_s": round(train_s, 1), "train_rss_mb": round(train_mb),
            "s_per_step": round(run["seconds_this_run"] / steps, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-scale"))
    args = parser.parse_args()
    fixture = _fixture()
    mini = fixture.make_mini_sd15(args.work / "mini-sd15")
    rows = []
    for n in args.sizes:
        rows.append(bench_size(args.work / f"n{n}", mini, n, args.steps, args.batch, fixture.RESOLUTION))
        print(json.dumps(rows[-1]), flush=True)
    first, last = rows[0], rows[-1]
    print(f"\npeak RSS {last['n']:,} / {first['n']:,}: base {last['base_rss_mb'] / first['base_rss_mb']:.2f}x, "
          f"train {last['train_rss_mb'] / first['train_rss_mb']:.2f}x (goal <= 1.2x); s/step "
          f"{first['s_per_step']} -> {last['s_per_step']}; base s per 1,000 images "
          + ", ".join(f"{r['base_s'] / r['n'] * 1000:.2f}" for r in rows))


if __name__ == "__main__":
    main()
