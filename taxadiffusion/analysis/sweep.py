"""Guidance-scale sweep plot (supplement B.5 / Fig. S5): metric vs ``guidance_scale`` over DVC experiments.

The paper sweeps TaxaGuide's scale over {0, 2, 4, 6, 8, 10} and keeps 6 (docs/method.md §3). Here every scale is a
DVC experiment; only generate -> evaluate -> report re-run for each (dvc.yaml lists ``guidance_scale`` for
``generate`` only)::

    dvc exp run --queue -S guidance_scale=0,2,4,6,8,10
    dvc queue start            # then wait: dvc queue status
    taxadiffusion sweep --out metrics/guidance_sweep.png

Reads ``dvc exp show --json`` (or ``--json FILE``), takes each experiment's ``guidance_scale`` from params.yaml
and the chosen metrics from ``metrics/classes/all.json`` (the all-classes row of the per-class metrics that
``evaluate`` declares; dotted paths into it, e.g. ``probe.fid``), and writes a PNG (one panel per metric) plus a
CSV with one row per experiment next to it. Experiments that failed, are still queued/running, lack the param or
the metrics file, or whose metrics were computed at another scale (the file's ``scale``: a failed experiment
keeps the metrics of the workspace it was queued from) are skipped and counted.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path
from typing import Optional

import pandas as pd

from taxadiffusion.analysis.expshow import (
    LOWER_IS_BETTER,
    ExpSource,
    as_float,
    drawn_at_other_scale,
    file_data,
    flatten,
    get,
    numeric_keys,
    revision_name,
    revisions,
    usable,
)
from taxadiffusion.cli import run_tool
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("probe.fid", "probe.acc.species")
METRICS_FILE = "metrics/headline.json"  # evaluate's DVC metrics (the pooled row)
LEGACY_METRICS_FILE = "metrics/classes/all.json"  # the same row, as experiments before headline.json declared it


def _changed(params: dict, base: dict, param: str, params_file: str) -> list[str]:
    """``key=value`` of the params other than ``param`` in which an experiment differs from its baseline commit."""
    base_data = file_data(base.get("data") or {}, "params", params_file) or {}
    mine, theirs = flatten(params), flatten(base_data)
    return [f"{k}={mine.get(k)}" for k in sorted(set(mine) | set(theirs))
            if k != param and mine.get(k) != theirs.get(k)]


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
    first_read: Optional[tuple[str, dict]] = None  # (file, content) of a metrics file read, for the error below
    for entry, kind, executor, base in revisions(doc, include_workspace):
        rev, name = str(entry.get("rev") or ""), revision_name(entry, kind)
        data, params, why = usable(entry, executor, params_file)
        if data is None:
            skipped[why] += 1
            continue
        try:
            scale = as_float(get(params, param))
        except KeyError:
            skipped[f"no param {param}"] += 1
            continue
        if scale is None:
            skipped[f"{param} is not a number"] += 1
            continue
        summary, read_from = file_data(data, "metrics", metrics_file), metrics_file
        if summary is None and metrics_file == METRICS_FILE:
            summary, read_from = file_data(data, "metrics", LEGACY_METRICS_FILE), LEGACY_METRICS_FILE
        if summary is None:
            skipped[f"no {metrics_file}"] += 1
            continue
        first_read = first_read or (read_from, summary)
        if drawn_at_other_scale(summary, scale):  # evaluate records the scale the images were drawn at
            skipped[f"{read_from} computed at another scale"] += 1
            continue
        row = {"experiment": name, "rev": rev, "kind": kind, "baseline": base.get("name") or str(base.get("rev"))[:7],
               param: scale}
        for m in metrics:
            try:
                row[m] = as_float(get(summary, m))
                found_metric[m] = True
            except KeyError:
                row[m] = None
        row["changed"] = "; ".join(_changed(params, base, param, params_file) if kind == "experiment" else [])
        rows.append(row)
    if not rows:
        why = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "none listed"
        raise UserError(
            f"no experiment with {params_file}:{param} and {metrics_file} in `dvc exp show` (skipped: {why}); "
            f"run e.g. `dvc exp run --queue -S {param}=0,2,4,6,8,10` then `dvc queue start`"
        )
    missing = [m for m, ok in found_metric.items() if not ok]
    if missing:
        where, content = first_read or (metrics_file, {})
        avail = ", ".join(numeric_keys(content)) or "none"
        raise UserError(f"{where}: metric '{missing[0]}' not found in any experiment (numeric keys: {avail}, ...)")
    table = pd.DataFrame(rows).sort_values([param, "kind", "experiment"], kind="stable").reset_index(drop=True)
    return table, skipped


def plot(table: pd.DataFrame, metrics: list[str] | tuple[str, ...], out: str | Path,
         param: str = "guidance_scale") -> Path:
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


def sweep(out: str | Path, source: ExpSource = ExpSource(), metrics=DEFAULT_METRICS, param: str = "guidance_scale",
          metrics_file: str = METRICS_FILE) -> tuple[pd.DataFrame, Counter]:
    """Collect, then write ``out`` (plot) and ``out`` with suffix ``.csv`` (the table)."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--out {out}: use a .png, .svg or .pdf file name (the CSV is written next to it)")
    table, skipped = collect(source.document(), list(metrics), param, metrics_file=metrics_file,
                             include_workspace=source.include_workspace)
    plot(table, list(metrics), out, param)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    if (table["changed"] != "").any():
        log.warning("sweep: some experiments also change other params (see column 'changed' in %s)",
                    out.with_suffix(".csv"))
    log.info("sweep: %d experiment(s) at %s = %s; skipped %s; wrote %s and %s", len(table), param,
             sorted(float(x) for x in table[param].unique()), dict(skipped) or "none", out, out.with_suffix(".csv"))
    return table, skipped


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taxadiffusion sweep", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--out", default="metrics/guidance_sweep.png", help="plot file; the CSV goes next to it")
    parser.add_argument("--metric", action="append", default=None,
                        help=f"dotted path into the metrics file, repeatable (default: {' '.join(DEFAULT_METRICS)})")
    ExpSource.add_arguments(parser)
    parser.add_argument("--param", default="guidance_scale",
                        help="swept param in params.yaml (default: guidance_scale)")
    parser.add_argument("--metrics-file", default=METRICS_FILE)
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    run_tool(lambda args: sweep(args.out, ExpSource.from_args(args),
                                args.metric or DEFAULT_METRICS, args.param, args.metrics_file), parser(), argv)


if __name__ == "__main__":
    main()
