"""Guidance-scale sweep plot (supplement B.5 / Fig. S5): metric vs ``guidance_scale`` over DVC experiments.

The paper sweeps TaxaGuide's scale over {0, 2, 4, 6, 8, 10} and keeps 6 (method.md §4). Here every scale is a
DVC experiment; only generate -> evaluate -> report re-run for each (dvc.yaml lists ``guidance_scale`` for
``generate`` only)::

    dvc exp run --queue -S guidance_scale=0,2,4,6,8,10
    dvc queue start            # then wait: dvc queue status
    python -m taxadiffusion.sweep --out metrics/guidance_sweep.png

Reads ``dvc exp show --json`` (or ``--json FILE``), takes each experiment's ``guidance_scale`` from params.yaml
and the chosen metrics from ``metrics/classes/all.json`` (the all-classes row of the per-class metrics that
``evaluate`` declares; dotted paths into it, e.g. ``probe.fid``), and writes a PNG (one panel per metric) plus a
CSV with one row per experiment next to it. Experiments that failed, are still queued/running, lack the param or
the metrics file, or whose metrics were computed at another scale (the file's ``scale``: a failed experiment
keeps the metrics of the workspace it was queued from) are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd

from .errors import UserError
from .io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("probe.fid", "probe.acc.species")
METRICS_FILE = "metrics/classes/all.json"
# Direction hints for panel titles; anything else is shown without one.
LOWER_IS_BETTER = ("fid", "lpips", "dist")
RUNNING_STATES = ("queued", "running")


def exp_show(json_file: Optional[str | Path] = None, all_commits: bool = False, cwd: str | Path = ".") -> list:
    """The ``dvc exp show --json`` document: read from ``json_file`` or from a ``dvc`` subprocess in ``cwd``."""
    if json_file is not None:
        path = Path(json_file)
        if not path.exists():
            raise UserError(f"{path}: not found (write it with: dvc exp show --json > {path})")
        text, where = path.read_text(), str(path)
    else:
        cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise UserError(f"`dvc exp show --json` failed in {Path(cwd).resolve()} (exit {proc.returncode}): {last}")
        text, where = proc.stdout, "`dvc exp show --json` output"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(doc, list):
        raise UserError(f"{where}: expected a JSON list of revisions (dvc 3 `exp show --json`), got {type(doc).__name__}")
    return doc


def _revisions(doc: list, include_workspace: bool) -> Iterator[tuple[dict, str, Optional[dict], dict]]:
    """Yield ``(entry, kind, executor, baseline_entry)`` for every baseline commit and every experiment under it."""
    for base in doc:
        if not isinstance(base, dict):
            continue
        if base.get("rev") == "workspace":
            if include_workspace:
                yield base, "workspace", None, base
            continue
        yield base, "baseline", None, base
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                yield rev, "experiment", exp.get("executor"), base


def _get(tree: Any, dotted: str) -> Any:
    """``tree['a']['b']`` for ``'a.b'``; ``KeyError`` when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            raise KeyError(dotted)
        tree = tree[part]
    return tree


def _file_data(data: dict, section: str, file: str) -> Optional[dict]:
    entry = (data.get(section) or {}).get(file)
    if not isinstance(entry, dict) or entry.get("error") or not isinstance(entry.get("data"), dict):
        return None
    return entry["data"]


def _flatten(tree: Any, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out: dict = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _numeric_keys(tree: dict, limit: int = 12) -> list[str]:
    keys = [k for k, v in _flatten(tree).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sorted(keys, key=lambda k: not k.startswith("probe."))[:limit]  # the headline numbers first


def _as_float(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def collect(
    doc: list,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    param: str = "guidance_scale",
    params_file: str = "params.yaml",
    metrics_file: str = METRICS_FILE,
    include_workspace: bool = False,
) -> tuple[pd.DataFrame, Counter]:
    """One row per usable revision: name, rev, kind, baseline, ``param``, each metric, and ``changed`` (params
    other than ``param`` that differ from the experiment's baseline commit). Returns ``(table, skipped)``."""
    rows, skipped = [], Counter()
    found_metric = {m: False for m in metrics}
    any_metrics_file: Optional[dict] = None
    for entry, kind, executor, base in _revisions(doc, include_workspace):
        rev = str(entry.get("rev") or "")
        name = entry.get("name") or (rev if kind == "workspace" else rev[:7])
        state = (executor or {}).get("state")
        if state in RUNNING_STATES:
            skipped[f"still {state}"] += 1
            continue
        if entry.get("error") or state == "failed":
            skipped["failed"] += 1  # its metrics are those of the workspace it was queued from
            continue
        data = entry.get("data")
        if not isinstance(data, dict):
            skipped["no data"] += 1
            continue
        params = _file_data(data, "params", params_file)
        if params is None:
            skipped[f"no {params_file}"] += 1
            continue
        try:
            scale = _as_float(_get(params, param))
        except KeyError:
            skipped[f"no param {param}"] += 1
            continue
        if scale is None:
            skipped[f"{param} is not a number"] += 1
            continue
        summary = _file_data(data, "metrics", metrics_file)
        if summary is None:
            skipped[f"no {metrics_file}"] += 1
            continue
        any_metrics_file = any_metrics_file or summary
        try:  # evaluate records the scale the images were drawn at (manifest -> `scale`; null when mixed)
            drawn = {_as_float(_get(summary, "scale"))}
        except KeyError:
            drawn = None
        if drawn is not None and drawn != {scale}:
            skipped[f"{metrics_file} computed at another scale"] += 1
            continue
        row = {"experiment": name, "rev": rev, "kind": kind, "baseline": base.get("name") or str(base.get("rev"))[:7],
               param: scale}
        for m in metrics:
            try:
                row[m] = _as_float(_get(summary, m))
                found_metric[m] = True
            except KeyError:
                row[m] = None
        changed = []
        if kind == "experiment":
            base_data = _file_data(base.get("data") or {}, "params", params_file) or {}
            mine, theirs = _flatten(params), _flatten(base_data)
            changed = [f"{k}={mine.get(k)}" for k in sorted(set(mine) | set(theirs))
                       if k != param and mine.get(k) != theirs.get(k)]
        row["changed"] = "; ".join(changed)
        rows.append(row)
    if not rows:
        why = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "none listed"
        raise UserError(
            f"no experiment with {params_file}:{param} and {metrics_file} in `dvc exp show` (skipped: {why}); "
            f"run e.g. `dvc exp run --queue -S {param}=0,2,4,6,8,10` then `dvc queue start`"
        )
    missing = [m for m, ok in found_metric.items() if not ok]
    if missing:
        avail = ", ".join(_numeric_keys(any_metrics_file or {})) or "none"
        raise UserError(f"{metrics_file}: metric '{missing[0]}' not found in any experiment (numeric keys: {avail}, ...)")
    table = pd.DataFrame(rows).sort_values([param, "kind", "experiment"], kind="stable").reset_index(drop=True)
    return table, skipped


def plot(table: pd.DataFrame, metrics: list[str] | tuple[str, ...], out: str | Path, param: str = "guidance_scale") -> Path:
    """One panel per metric: every experiment as a point, a line through the mean at each scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = table[[param, metric]].dropna()
        mean = data.groupby(param)[metric].mean()
        ax.plot(mean.index, mean.values, "-", color="#4a7ab5", alpha=0.7)
        ax.plot(data[param], data[metric], "o", color="#4a7ab5")
        hint = " (lower is better)" if any(p.startswith(LOWER_IS_BETTER) for p in metric.split(".")) else ""
        ax.set_title(f"{metric}{hint}", fontsize=10)
        ax.set_xlabel(param)
        ax.set_xticks(sorted(float(x) for x in table[param].unique()))
        ax.grid(alpha=0.3)
    fig.suptitle("TaxaGuide scale sweep (supplement Fig. S5)", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
    return out


def sweep(out: str | Path, metrics=DEFAULT_METRICS, json_file=None, all_commits: bool = False,
          include_workspace: bool = False, param: str = "guidance_scale", metrics_file: str = METRICS_FILE,
          cwd: str | Path = ".") -> tuple[pd.DataFrame, Counter]:
    """Collect, then write ``out`` (plot) and ``out`` with suffix ``.csv`` (the table)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--out {out}: use a .png, .svg or .pdf file name (the CSV is written next to it)")
    doc = exp_show(json_file, all_commits, cwd)
    table, skipped = collect(doc, list(metrics), param, metrics_file=metrics_file, include_workspace=include_workspace)
    plot(table, list(metrics), out, param)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    if (table["changed"] != "").any():
        log.warning("sweep: some experiments also change other params (see column 'changed' in %s)",
                    out.with_suffix(".csv"))
    log.info("sweep: %d experiment(s) at %s = %s; skipped %s; wrote %s and %s", len(table), param,
             sorted(float(x) for x in table[param].unique()), dict(skipped) or "none", out, out.with_suffix(".csv"))
    return table, skipped


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--out", default="metrics/guidance_sweep.png", help="plot file; the CSV goes next to it")
    parser.add_argument("--metric", action="append", default=None,
                        help=f"dotted path into the metrics file, repeatable (default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--json", default=None, help="read this `dvc exp show --json` file instead of running dvc")
    parser.add_argument("--param", default="guidance_scale", help="swept param in params.yaml (default: guidance_scale)")
    parser.add_argument("--metrics-file", default=METRICS_FILE)
    parser.add_argument("--all-commits", action="store_true", help="experiments of all commits, not only HEAD's")
    parser.add_argument("--include-workspace", action="store_true", help="also the (uncommitted) workspace row")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sweep(args.out, args.metric or DEFAULT_METRICS, args.json, args.all_commits, args.include_workspace,
              args.param, args.metrics_file)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
