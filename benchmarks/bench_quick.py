"""Quick speed goals that the tests once asserted on the wall clock (the tests now check behaviour only: on a
shared CPU a timed assertion fails for reasons that are not the code's).

Run from the repository root:  ``python benchmarks/bench_quick.py [--renders 200] [--repeat 3]``

1. The synthetic world's renderer (``taxadiffusion.data.animals.render``, what ``synthesize`` draws every image
   with): milliseconds per 32 px image over random trait combinations.
2. ``python -m taxadiffusion paramcount --json`` in a fresh process from another folder (SD1.5 built on the
   ``meta`` device, Table S1): wall seconds, interpreter start included. Goal: <= 45 s.
3. The one-line errors for metric backbones whose weights are missing (an empty ``TORCH_HOME``,
   ``HF_HUB_OFFLINE=1``): Inception (FID) and LPIPS-VGG <= 5 s each, the BioCLIP hub model <= 10 s (offline:
   no download retries). Timed from the constructor call to the error, imports excluded.

Each figure is the median of ``--repeat`` runs. Prints one line per figure and a JSON summary; the exit code is 1
when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before any Hugging Face import
REPO = Path(__file__).resolve().parents[1]
LEVELS = ["class", "order", "family", "genus", "species"]


def render_ms(n: int) -> float:
    """Milliseconds per image of ``n`` renders of random traits."""
    import numpy as np

    from taxadiffusion.data import animals

    rng = np.random.default_rng(0)
    animals.render(animals.random_traits(rng), rng)  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        animals.render(animals.random_traits(rng), rng)
    return (time.perf_counter() - start) / n * 1e3


def paramcount_s() -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory() as cwd:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "taxadiffusion", "paramcount", "--json"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"paramcount failed:\n{proc.stderr[-2000:]}")
    json.loads(proc.stdout)
    return seconds


def missing_weights_s(name: str) -> float:
    """Seconds from the constructor call to its one-line UserError, with nothing cached."""
    from taxadiffusion.core.errors import UserError
    from taxadiffusion.metrics.backbones import InceptionBackbone
    from taxadiffusion.metrics.bioclip import BioCLIPScorer
    from taxadiffusion.metrics.lpips_metric import LPIPSMetric

    make = {"inception": lambda: InceptionBackbone(None), "lpips-vgg": lambda: LPIPSMetric("vgg", None),
            "bioclip": lambda: BioCLIPScorer("hf-hub:imageomics/bioclip", "{lineage}", LEVELS)}[name]
    with tempfile.TemporaryDirectory() as home:
        os.environ["TORCH_HOME"] = home
        start = time.perf_counter()
        try:
            make()
        except UserError:
            return time.perf_counter() - start
    raise SystemExit(f"{name}: expected a one-line error for missing weights, got a backbone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=200, help="images per render measurement")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is reported)")
    args = parser.parse_args()

    def median(fn, *fn_args) -> float:
        return statistics.median(fn(*fn_args) for _ in range(args.repeat))

    rows = [("render, ms per 32 px image", median(render_ms, args.renders), None),
            ("paramcount --json, s (fresh process)", median(paramcount_s), 45.0)]
    for name, goal in (("inception", 5.0), ("lpips-vgg", 5.0), ("bioclip", 10.0)):
        rows.append((f"missing {name} weights -> one-line error, s", median(missing_weights_s, name), goal))
    missed = False
    for label, value, goal in rows:
        verdict = "" if goal is None else ("ok" if value <= goal else "MISSED")
        missed |= verdict == "MISSED"
        print(f"{label:<48} {value:9.3f}   goal {'-' if goal is None else f'<= {goal:g}':>7}  {verdict}")
    print(json.dumps({label: round(value, 3) for label, value, _ in rows}))
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
