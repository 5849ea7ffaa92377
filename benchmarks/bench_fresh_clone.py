"""Benchmark: the embedded default's `dvc repro` on a fresh clone, stage by stage, and whether it reproduces the
committed dvc.lock.

Run from the repository root:  ``python benchmarks/bench_fresh_clone.py [--rev HEAD] [--keep DIR]``

1. ``git clone`` of this repository at ``--rev`` into a temporary folder (or ``--keep DIR``, left in place).
2. ``dvc repro`` there, with the clone first on ``PYTHONPATH`` (its own ``taxadiffusion``, whatever is installed)
   and ``HF_HUB_OFFLINE=1``; every ``Running stage`` line DVC prints is time-stamped, so each stage's wall time
   is the time to the next one (DVC's own bookkeeping included). Peak memory is the largest ``ru_maxrss`` of
   the processes it ran (``RUSAGE_CHILDREN``).
3. Compares the new ``dvc.lock`` with the committed one: output by output, dependency by dependency, and whole.

Goal (issue "figures, previews, report"): the whole run in <= 10 min on 2 idle CPU cores, previews and figures
on. Output hashes match the committed lock only on the CPU type (and thread count) that wrote it: CPU kernels
are chosen by instruction set, and different kernels round differently (docs/results.md).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 600
STAGE = re.compile(r"^Running stage '(?P<name>[^']+)'")


def outs_of(lock: dict) -> dict[str, str]:
    """``{"<stage> <path>": hash}`` for every output in a parsed dvc.lock."""
    found = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            found[f"{stage} {out['path']}"] = str(out.get("md5") or out.get("hash"))
    return found


def deps_of(lock: dict) -> dict[str, str]:
    """``{"<stage> <path>": hash}`` for every dependency in a parsed dvc.lock."""
    return {f"{stage} {dep['path']}": str(dep.get("md5") or dep.get("hash"))
            for stage, entry in (lock.get("stages") or {}).items() for dep in entry.get("deps") or []}


def run_repro(clone: Path) -> tuple[list[tuple[str, float]], float]:
    """``([(stage, seconds)], total seconds)`` of ``dvc repro`` in ``clone``; its output goes to repro.log."""
    env = {**os.environ, "PYTHONPATH": f"{clone}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    marks: list[tuple[str, float]] = []
    with open(clone / "repro.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=clone, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if m := STAGE.match(line):
                marks.append((m["name"], time.perf_counter()))
        rc = proc.wait()
    end = time.perf_counter()
    if rc != 0:
        sys.exit(f"dvc repro failed (exit {rc}); see {clone / 'repro.log'}")
    stages = [(name, (marks[i + 1][1] if i + 1 < len(marks) else end) - t) for i, (name, t) in enumerate(marks)]
    if marks:
        stages.insert(0, ("(dvc start-up)", marks[0][1] - start))
    return stages, end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="commit to clone (default: HEAD)")
    parser.add_argument("--keep", default=None, help="clone into this (new) folder and leave it there")
    args = parser.parse_args()
    tmp = None if args.keep else tempfile.mkdtemp(prefix="fresh-clone-")
    clone = Path(args.keep or tmp) / ("" if args.keep else "repo")
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", args.rev], cwd=clone, check=True)
        committed_text = (clone / "dvc.lock").read_text()
        committed_lock = yaml.safe_load(committed_text)
        committed = outs_of(committed_lock)
        stages, total = run_repro(clone)
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        print("| stage | wall s |\n|---|---|")
        for name, seconds in stages:
            print(f"| {name} | {seconds:.1f} |")
        verdict = "within" if total <= GOAL_S else "OVER"
        print(f"\ntotal {total:.0f} s ({int(total // 60)} min {total % 60:.0f} s; {verdict} the {GOAL_S} s goal), "
              f"peak RSS {peak_gb:.2f} GB, {os.cpu_count()} CPUs")
        fresh_text = (clone / "dvc.lock").read_text()
        fresh_lock = yaml.safe_load(fresh_text)
        fresh = outs_of(fresh_lock)
        same = sorted(k for k in fresh if committed.get(k) == fresh[k])
        changed = sorted(k for k in fresh if k in committed and committed[k] != fresh[k])
        new = sorted(k for k in fresh if k not in committed)
        print(f"dvc.lock outputs: {len(same)} as committed, {len(changed)} changed, {len(new)} new")
        for k in changed:
            print(f"  changed: {k}")
        for k in new:
            print(f"  new: {k}")
        # The committed lock must come back byte for byte (a dependency hash that moves, e.g. a wall time in a
        # folder another stage depends on, makes every fresh clone's `dvc status` dirty).
        old_deps, new_deps = deps_of(committed_lock), deps_of(fresh_lock)
        moved = sorted(k for k in new_deps if old_deps.get(k) != new_deps[k])
        print(f"dvc.lock file: {'unchanged' if fresh_text == committed_text else 'CHANGED'}"
              f" ({len(moved)} dependency hash(es) differ)")
        for k in moved:
            print(f"  dependency changed: {k}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
