"""Benchmark: `dvc repro` of images -> prepare -> shard on a BIOSCAN-1M-sized table and a large image root, twice.

Run from the repository root:  ``python benchmarks/bench_image_root.py [--rows 1100000] [--files 200000]``

1. Generates (not timed) a BIOSCAN-format TSV with ``--rows`` rows (the generator of ``bench_prepare.py``; ~9% complete
   to species) and an image root of ``--files`` small JPEGs at ``part<chunk>/<image_file>``: every complete row's image
   plus images of incomplete rows, as the real root holds images of every record.
2. In a temporary git + DVC repository holding this checkout's ``stages/``, ``taxadiffusion`` (installed) and
   ``dvc.yaml``, runs ``dvc repro shard`` (the `images`, `prepare` and `shard` stages) and times it.
3. Runs ``dvc repro shard`` again with nothing changed and times it. Goal: <= 10 s (DVC no longer hashes the image
   root: the `images` stage walks it and reuses its cached content hashes).
4. Touches one image with new bytes and times a third run (re-hashes one file; prepare and shard re-run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _bench_prepare():
    spec = importlib.util.spec_from_file_location("bench_prepare", REPO / "benchmarks" / "bench_prepare.py")
    module = importlib.util.module_from_spec(spec)  # the sibling benchmark's TSV generator
    spec.loader.exec_module(module)
    return module


def write_images(tsv: Path, root: Path, files: int) -> int:
    """One tiny JPEG per row, complete rows first, until ``files`` files exist."""
    import pandas as pd

    table = pd.read_csv(tsv, sep="\t", usecols=["species", "image_file", "chunk_number"], dtype=str)
    complete = table["species"] != "not_classified"
    order = list(table.index[complete]) + list(table.index[~complete])
    rng = np.random.default_rng(0)
    pixels = [Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(16)]
    written = 0
    for i in order[:files]:
        path = root / f"part{table.at[i, 'chunk_number']}" / table.at[i, "image_file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels[written % 16].save(path, format="JPEG", quality=80)
        written += 1
    return written


def _repro(repo: Path) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "shard"], cwd=repo, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    ran = [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage '")]
    return seconds, ",".join(ran) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_100_000)
    parser.add_argument("--files", type=int, default=200_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-image-root-"))
    try:
        t0 = time.perf_counter()
        tsv = tmp / "BIOSCAN_Insect_Dataset_metadata.tsv"
        gen = _bench_prepare().generate_tsv(tsv, args.rows)
        n_files = write_images(tsv, tmp / "images", args.files)
        print(f"generated {args.rows:,} rows ({gen['complete']:,} complete) and {n_files:,} images in "
              f"{time.perf_counter() - t0:.0f} s (not counted)", flush=True)
        repo = tmp / "repo"
        repo.mkdir()
        for name in ("stages", "dvc.yaml", ".dvcignore"):
            src = REPO / name
            shutil.copytree(src, repo / name) if src.is_dir() else shutil.copy(src, repo / name)
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["dataset"].update(name="bioscan1m", metadata=str(tsv), images=str(tmp / "images"), synonyms={},
                                 preprocess="pad_white")
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
        # the library: the installed package (this checkout, editable); dvc.yaml's deps on its files are copied
        shutil.copytree(REPO / "taxadiffusion", repo / "taxadiffusion")
        results = {"rows": args.rows, "files": n_files}
        results["first_s"], results["first_ran"] = _repro(repo)
        results["second_s"], results["second_ran"] = _repro(repo)
        one = next((tmp / "images").rglob("*.jpg"))
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(one, format="JPEG")
        results["third_s"], results["third_ran"] = _repro(repo)
        fingerprint = json.loads((repo / "data" / "image_root.json").read_text())
        results["fingerprint_files"] = fingerprint["files"]
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
