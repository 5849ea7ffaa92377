"""Samplers: quality vs steps, with paired seeds, on a workspace where ``dvc repro`` has run.

Run from anywhere:
``python benchmarks/bench_samplers.py WORKSPACE [--runs pndm:250,pndm:50,dpmsolver++:20,unipc:20] [--seeds 0,1,2]
[--images-per-species N]``

WORKSPACE is a *copy* of a repository after ``dvc repro`` (it needs ``models/<generate.target_level>``,
``models/probe``, ``data/prepared`` and ``data/shards``); nothing of its pipeline outputs is touched: everything
goes under ``WORKSPACE/bench_samplers/``. For every seed and every ``sampler:steps`` run, the workspace's own stage
scripts are called with its own code (``PYTHONPATH=WORKSPACE``), as ``dvc.yaml`` calls them:

1. ``stages/generate.py`` with a params file that is the workspace's ``params.yaml`` with ``seed``,
   ``num_inference_steps``, ``generate.sampler`` (and ``--images-per-species``) replaced, into a fresh folder;
   timed (the stage's own "in X s": model loading, sampling, PNG writes; not the interpreter start);
2. ``stages/evaluate.py`` on those images with the workspace's ``evaluate`` section (``backbones: [probe]`` in
   the embedded default; the real-image features are cached once in ``bench_samplers/features``).

Paired: at one seed every sampler draws the same plan from the same per-image initial noise (the plan and each
image's noise seed are functions of (seed, lineage, index) only: ``taxadiffusion/sampling/plan.py``) with the same
trained model, so a per-seed difference between two samplers is the samplers' difference alone. A finished run
(``bench_samplers/rows/<sampler>-<steps>_s<seed>_ips<images>.json``) is not redone: a stopped benchmark
continues where it stopped.

Prints the settings, then two Markdown tables: probe FID, per-level probe accuracy and generation seconds as
mean ± sd over the seeds; and the paired differences from the first run (mean ± sd over seeds of run - first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

BENCH = "bench_samplers"


def parse_runs(text: str) -> list[tuple[str, int]]:
    runs = []
    for item in text.split(","):
        name, _, steps = item.strip().rpartition(":")
        if not name or not steps.isdigit():
            raise SystemExit(f"--runs: {item!r} is not sampler:steps (e.g. pndm:50)")
        runs.append((name, int(steps)))
    return runs


def tag(sampler: str, steps: int) -> str:
    return f"{sampler}-{steps}"


def run_name(run: tuple[str, int], seed: int, images: int) -> str:
    return f"{tag(*run)}_s{seed}_ips{images}"


def write_params(ws: Path, bench: Path, run: tuple[str, int], seed: int, images: int) -> Path:
    """The workspace's params.yaml with this run's seed, steps, sampler and images per species."""
    data = yaml.safe_load((ws / "params.yaml").read_text())
    data.update(seed=seed, num_inference_steps=run[1])
    data["generate"]["sampler"] = run[0]
    data["generate"].update(images_per_species=images, images_per_species_capped=min(
        images, data["generate"]["images_per_species_capped"]))
    path = bench / "params" / f"{run_name(run, seed, images)}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def call_stage(ws: Path, argv: list[str], log: Path) -> str:
    """Run ``python stages/<argv>`` in the workspace with its own code; its log (stdout + stderr) is returned."""
    env = {**os.environ, "PYTHONPATH": str(ws), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, *argv], cwd=ws, env=env, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise SystemExit(f"{argv[0]} failed ({log}):\n" + "\n".join(tail))
    return proc.stdout + proc.stderr


def one_run(ws: Path, bench: Path, run: tuple[str, int], seed: int, images: int) -> dict:
    """Generate + evaluate one (sampler, steps, seed, images per species); the row is kept in ``rows/`` and reused."""
    name = run_name(run, seed, images)
    row_file = bench / "rows" / f"{name}.json"
    if row_file.is_file():
        return json.loads(row_file.read_text())
    params = write_params(ws, bench, run, seed, images)
    gen, met = bench / "generated" / name, bench / "metrics" / name
    load = os.getloadavg()[0]
    start = time.perf_counter()
    out = call_stage(ws, ["stages/generate.py", "--params", str(params), "--out", str(gen)], bench / "logs" /
                     f"{name}.generate.log")
    wall = time.perf_counter() - start
    stage = re.search(r"generate: (\d+) taxa, (\d+) images .* in ([0-9.]+) s", out)
    call_stage(ws, ["stages/evaluate.py", "--params", str(params), "--shards", "data/shards", "--generated", str(gen),
                    "--probe", "models/probe", "--cache", str(bench / "features"), "--out", str(met)],
               bench / "logs" / f"{name}.evaluate.log")
    probe = json.loads((met / "headline.json").read_text())["probe"]
    row = {"sampler": run[0], "steps": run[1], "seed": seed, "images": int(stage.group(2)),
           "generate_s": float(stage.group(3)), "process_s": round(wall, 1), "load_before": round(load, 2),
           "fid": probe["fid"], "kid": probe.get("kid"), "fid_floor": probe.get("fid_floor"), "acc": probe["acc"]}
    row_file.parent.mkdir(parents=True, exist_ok=True)
    row_file.write_text(json.dumps(row, indent=1))
    print(f"  {name}: {row['images']} images in {row['generate_s']:.1f} s (load {load:.1f}), FID {row['fid']:.2f}, "
          f"acc {row['acc']}", flush=True)
    return row


def unet_evaluations(ws: Path, run: tuple[str, int]) -> int:
    """Denoising steps the scheduler actually takes (PNDM: steps + 1), each one guided UNet call per image; asked
    of the workspace's own code, as the stages are."""
    code = ("import json, sys; from taxadiffusion.sampling.denoise import make_scheduler; "
            "s = make_scheduler(sys.argv[1], json.load(open('assets/tiny-base/scheduler/scheduler_config.json'))); "
            "s.set_timesteps(int(sys.argv[2])); print(len(s.timesteps))")
    env = {**os.environ, "PYTHONPATH": str(ws)}
    out = subprocess.run([sys.executable, "-c", code, run[0], str(run[1])], cwd=ws, env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def mean_sd(values: list[float], fmt: str = "{:.2f}") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.replace('+', '').format(sd)}"


def metrics_of(row: dict, levels: list[str]) -> list[float]:
    return [row["fid"], *(row["acc"][lv] for lv in levels), row["generate_s"]]


def tables(rows: dict, runs: list, seeds: list, levels: list[str], nfe: dict) -> str:
    """The two Markdown tables: mean ± sd over seeds, and paired differences from ``runs[0]``."""
    head = ["FID (probe)", *(f"acc {lv}" for lv in levels), "generate s"]
    fmts = ["{:.2f}", *["{:.3f}"] * len(levels), "{:.0f}"]
    lines = ["| sampler | UNet evals | " + " | ".join(head) + " |", "|---" * (len(head) + 2) + "|"]
    for run in runs:
        cols = list(zip(*(metrics_of(rows[run, s], levels) for s in seeds)))
        lines.append(f"| {tag(*run)} | {nfe[run]} | " + " | ".join(mean_sd(list(c), f) for c, f in zip(cols, fmts))
                     + " |")
    lines += ["", f"Paired differences from {tag(*runs[0])} (same seed; mean ± sd over seeds):", "",
              "| sampler | " + " | ".join(f"Δ {h}" for h in head) + " |", "|---" * (len(head) + 1) + "|"]
    for run in runs[1:]:
        diffs = [[a - b for a, b in zip(metrics_of(rows[run, s], levels), metrics_of(rows[runs[0], s], levels))]
                 for s in seeds]
        fmts_d = [f.replace("{:", "{:+") for f in fmts]
        lines.append(f"| {tag(*run)} | " + " | ".join(mean_sd(list(c), f) for c, f in zip(zip(*diffs), fmts_d))
                     + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, help="a copy of a repository after dvc repro")
    parser.add_argument("--runs", default="pndm:250,pndm:50,dpmsolver++:20,unipc:20",
                        help="sampler:steps,... (the first is the reference of the paired differences)")
    parser.add_argument("--seeds", default="0,1,2", help="generation seeds (params.yaml seed), comma-separated")
    parser.add_argument("--images-per-species", type=int, default=None,
                        help="generate.images_per_species for every run (default: the workspace's)")
    args = parser.parse_args()
    ws = args.workspace.resolve()
    runs, seeds = parse_runs(args.runs), [int(s) for s in args.seeds.split(",")]
    bench = ws / BENCH
    params = yaml.safe_load((ws / "params.yaml").read_text())
    levels = list(params["levels"])
    images = args.images_per_species or params["generate"]["images_per_species"]
    commit = subprocess.run(["git", "-C", str(ws), "log", "-1", "--format=%h %cs"], capture_output=True,
                            text=True).stdout.strip()
    print(f"workspace {ws} (commit {commit}); {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"guidance_scale {params['guidance_scale']}; images per species "
          f"{images}; seeds {seeds}", flush=True)
    rows = {}
    for seed in seeds:  # seeds outermost: a partial benchmark has complete, paired seeds
        for run in runs:
            rows[run, seed] = one_run(ws, bench, run, seed, images)
    nfe = {run: unet_evaluations(ws, run) for run in runs}
    print(tables(rows, runs, seeds, levels, nfe))
    (bench / "summary.json").write_text(json.dumps([rows[k] for k in rows], indent=1))


if __name__ == "__main__":
    main()
