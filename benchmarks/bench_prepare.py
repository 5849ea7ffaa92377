"""Benchmark ``prepare`` on a BIOSCAN-1M-sized TSV and ``shard`` on generated JPEGs.

Run from the repository root:  ``python benchmarks/bench_prepare.py [--rows 1100000] [--shard-images 2000]``

1. Generates a BIOSCAN-format TSV (the real 28-column header) with ``--rows`` rows in a temp folder
   (not timed): ~9% of rows complete to species, ``not_classified`` elsewhere (docs/datasets.md §1a),
   a long tail of ~8,000 species, and a 658-base ``nucraw`` so rows are about as long as the real
   file's (1.23 GB for 1,128,313 rows).
2. Runs ``prepare`` on it with ``prepare.check_images: none`` (no image files needed; the
   path-inside-root check still runs) in a child process and reports its wall time and peak RSS
   (``ru_maxrss`` of the child). Goal: <= 60 s and <= 4 GB on 2 cores.
3. Writes ``--shard-images`` 256x256 JPEGs and times ``write_shards`` to 32 px (images/s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from taxadiffusion.config import load_params, params_from_dict, read_params_dict
from taxadiffusion.data.prepare import prepare

REPO = Path(__file__).resolve().parents[1]

HEADER = ("sampleid processid uri name phylum class order family subfamily tribe genus species subspecies nucraw "
          "image_file large_diptera_family medium_diptera_family small_diptera_family large_insect_order "
          "medium_insect_order small_insect_order chunk_number copyright_license copyright_holder "
          "copyright_institution copyright_contact photographer author").split()
NC = "not_classified"
ORDERS = ["Diptera"] * 80 + ["Hymenoptera"] * 9 + ["Coleoptera"] * 4 + ["Hemiptera"] * 4 + ["Lepidoptera"] * 2 + [
    "Psocodea"]


def generate_tsv(path: Path, rows: int, seed: int = 0) -> dict:
    """A BIOSCAN-shaped TSV; returns how many rows are complete to species."""
    rng = np.random.default_rng(seed)
    n_species = 8000
    # long tail: Zipf-like species sizes, each species with a fixed genus / family / order
    sp_order = rng.choice(ORDERS, n_species)
    sp_family = [f"{o[:4]}idae{rng.integers(0, 60)}" for o in sp_order]
    sp_genus = [f"Genus{i // 3}" for i in range(n_species)]
    species = [f"{g} epithet{i}" for i, g in enumerate(sp_genus)]
    weights = 1.0 / np.arange(1, n_species + 1) ** 0.9
    weights /= weights.sum()
    dna_pool = ["".join(rng.choice(list("ACGT"), 658)) for _ in range(256)]
    complete = rng.random(rows) < 0.09
    genus_known = complete | (rng.random(rows) < 0.12)
    family_known = genus_known | (rng.random(rows) < 0.75)
    order_known = family_known | (rng.random(rows) < 0.97)
    sp_idx = rng.choice(n_species, rows, p=weights)
    dna_idx = rng.integers(0, len(dna_pool), rows)
    copyright = "CC BY 3.0\tCBG Photography Group\tCentre for Biodiversity Genomics\tccdbcurator@gmail.com\t" \
                "CBG Photography Group\tCBG Photography Group"
    with open(path, "w", buffering=1 << 24) as f:
        f.write("\t".join(HEADER) + "\n")
        for i in range(rows):
            s = sp_idx[i]
            order = sp_order[s] if order_known[i] else NC
            family = sp_family[s] if family_known[i] else NC
            genus = sp_genus[s] if genus_known[i] else NC
            sp = species[s] if complete[i] else NC
            name = next(x for x in (sp, genus, family, order, "Insecta") if x != NC)
            sid = f"BIOUG{i:08d}"
            f.write(f"{sid}\tBIOSC{i:07d}-21\tBOLD:A{s:06d}\t{name}\tArthropoda\tInsecta\t{order}\t{family}\t{NC}\t"
                    f"{NC}\t{genus}\t{sp}\t{NC}\t{dna_pool[dna_idx[i]]}\t{sid}.jpg\ttrain\ttrain\ttrain\tno_split\t"
                    f"no_split\tno_split\t{i // 10000 + 1}\t{copyright}\n")
    return {"rows": rows, "complete": int(complete.sum()), "bytes": path.stat().st_size}


def bench_params(overrides: dict) -> dict:
    """The repository's params.yaml (the one source of defaults) with ``overrides`` merged into its sections."""
    data = read_params_dict(REPO / "params.yaml")
    for section, values in overrides.items():
        data[section].update(values)
    return data


def child_prepare(params_path: str, out: str) -> None:
    """Run in a fresh process so ru_maxrss measures prepare alone."""
    params = load_params(params_path)
    t0 = time.perf_counter()
    report = prepare(params.dataset, params.prepare, params.level_names, out, show_progress=False)
    wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB
    print(json.dumps({"prepare_wall_s": round(wall, 2), "prepare_peak_rss_gb": round(peak_gb, 3),
                      "rows_in": report["rows_in"], "rows_kept": report["rows_kept"],
                      "species": report["species"]["total"], "dropped": report["dropped"]}))


def bench_prepare(tmp: Path, rows: int) -> dict:
    tsv = tmp / "BIOSCAN_Insect_Dataset_metadata.tsv"
    t0 = time.perf_counter()
    gen = generate_tsv(tsv, rows)
    print(f"generated {rows:,} rows ({gen['bytes'] / 1e9:.2f} GB, {gen['complete']:,} complete to species) "
          f"in {time.perf_counter() - t0:.1f} s (not counted)", flush=True)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(bench_params({
        "dataset": {"name": "bioscan1m", "metadata": str(tsv), "images": str(tmp / "images"), "synonyms": {},
                    "preprocess": "pad_white"},
        "prepare": {"check_images": "none"},
    }), sort_keys=False))  # sorted keys would list the levels alphabetically (fine -> coarse: a params error)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(params), str(tmp / "prepared")],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["child_process_wall_s"] = round(time.perf_counter() - t0, 2)  # includes interpreter start + imports
    result["tsv_gb"] = round(gen["bytes"] / 1e9, 2)
    result["expected_complete"] = gen["complete"]
    return result


def bench_shard(tmp: Path, n_images: int, resolution: int = 32) -> dict:
    # Imported here, not at the top: taxadiffusion.data.shard_reader pulls in torch (~470 MB RSS), which the prepare
    # child (this same file) must not load, or its ru_maxrss would not measure prepare alone.
    from taxadiffusion.data.shard import write_shards

    root = tmp / "shard_images"
    rng = np.random.default_rng(0)
    lines = ["image,class,order,family,genus,species"]
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for i in range(n_images):
        sp = i % 200
        rel = f"sp{sp:03d}/{i:05d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.roll(base, i, axis=1)).resize((256, 256), Image.Resampling.BICUBIC)
        img.save(root / rel, quality=90)
        lines.append(f"{rel},Insecta,Order{sp % 5},Fam{sp % 20},Gen{sp},Gen{sp} ep{sp}")
    (tmp / "shard_ann.csv").write_text("\n".join(lines) + "\n")
    params = params_from_dict(bench_params({
        "dataset": {"name": "table", "metadata": str(tmp / "shard_ann.csv"), "images": str(root),
                    "resolution": resolution, "preprocess": "center_crop"},
        "prepare": {"check_images": "header"},
        "shard": {"samples_per_shard": 1000},
    }))
    levels = params.level_names
    t0 = time.perf_counter()
    prepare(params.dataset, params.prepare, levels, tmp / "shard_prepared", show_progress=False)
    t_check = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = write_shards(params.dataset, params.shard, levels, tmp / "shard_prepared", tmp / "shards",
                         show_progress=False)
    t_shard = time.perf_counter() - t0
    n = index["train"]["count"] + index["test"]["count"]
    size = sum(p.stat().st_size for p in (tmp / "shards").rglob("*.tar"))
    return {"images": n, "source": "256x256 JPEG", "resolution": resolution,
            "prepare_header_check_s": round(t_check, 2), "prepare_images_per_s": round(n / t_check, 1),
            "shard_s": round(t_shard, 2), "shard_images_per_s": round(n / t_shard, 1),
            "shards_mb": round(size / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_100_000)
    parser.add_argument("--shard-images", type=int, default=2000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_prepare(*args.child)
        return
    print(f"cpu cores: {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as d:
        tmp = Path(d)
        if args.rows:
            res = bench_prepare(tmp, args.rows)
            ok = res["prepare_wall_s"] <= 60 and res["prepare_peak_rss_gb"] <= 4
            print(f"prepare: {res['rows_in']:,} rows -> {res['rows_kept']:,} kept in {res['prepare_wall_s']} s "
                  f"(child process {res['child_process_wall_s']} s), peak RSS {res['prepare_peak_rss_gb']} GB "
                  f"[goal <= 60 s, <= 4 GB: {'met' if ok else 'MISSED'}]")
            print(json.dumps(res))
        if args.shard_images:
            res = bench_shard(tmp, args.shard_images)
            print(f"shard: {res['images']} images {res['source']} -> {res['resolution']} px PNG: "
                  f"{res['shard_images_per_s']} images/s ({res['shard_s']} s); header check "
                  f"{res['prepare_images_per_s']} images/s")
            print(json.dumps(res))


if __name__ == "__main__":
    main()
