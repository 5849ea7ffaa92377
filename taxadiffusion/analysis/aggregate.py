"""Seeds as experiments: mean ± sd (and n) of the metrics over DVC experiments that differ only in ``seed``.

The top-level ``seed`` seeds the training of every level and method, the generation plan and noise, and the
probe; the data stay fixed (README "Configuration"). Repeat an experiment over seeds, then aggregate::

    dvc exp run --queue -S seed=0,1,2 && dvc queue start -j 1     # then wait: dvc queue status
    taxadiffusion aggregate --out metrics/seeds.md      # + metrics/seeds.csv

Reads ``dvc exp show --json`` (or ``--json FILE``). A *setting* is an experiment's params.yaml with ``seed``
removed: experiments with equal other params are seeds of one setting. Per experiment and method it takes the
``overall`` metrics of evaluate's summary: ``taxadiffusion`` (the main pipeline, always) from
``metrics/summary.json`` at the experiment's commit, else from ``metrics/classes/all.json`` in the JSON (no rarity
split there); every other method of ``params.methods`` from ``metrics/methods/<m>/summary.json`` at its commit
(``git show``: they are ``cache: false`` outputs, which ``dvc exp run`` commits). Per setting, method and metric
it writes the mean, the sample standard deviation (n - 1; none for n = 1) and n: a CSV (one row per metric) and a
Markdown table (one row per setting and method, plus the probe accuracy by rarity). Per setting, method and
seed it also takes each method's difference to ``taxadiffusion`` in the same experiment (paired: same split, probe
and noise seeds), mean ± sd over seeds and the number of seeds the method wins, in the Markdown and in
``<out>_paired.csv``. Skipped and counted: failed experiments (dvc keeps the metrics of the workspace they were
queued from), queued or running ones, ones without params or metrics, metrics drawn at another guidance scale, a
method's missing summary, and a second experiment with the same params and seed (the experiment is kept over the
baseline commit).

Experiments live in the ``refs/exps`` of the repository that ran them, which a clone does not carry: keep what was
read with ``--save-snapshot DIR`` (the exp show document and the summaries, :mod:`taxadiffusion.analysis.snapshot`) and
re-derive the tables anywhere with ``--snapshot DIR`` (the study in docs/results.md: ``--snapshot docs/study``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import subprocess
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from taxadiffusion.analysis import snapshot
from taxadiffusion.analysis.expshow import (
    LOWER_IS_BETTER,
    ExpSource,
    as_float,
    drawn_at_other_scale,
    file_data,
    flatten,
    revision_name,
    revisions,
    usable,
)
from taxadiffusion.analysis.seed_tables import HEADLINE, KIND_ORDER, RARITY, to_markdown
from taxadiffusion.cli import run_tool
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_path, write_text

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
SEED = "seed"
MAIN_METHOD = "taxadiffusion"
MAIN_SUMMARY = "metrics/summary.json"
HEADLINE_FILE = "metrics/headline.json"  # evaluate's DVC metrics: the pooled row
CLASSES_ALL = "metrics/classes/all.json"  # the same row, as experiments before headline.json declared it
ONE_SETTING = "(one setting)"

Reader = Callable[[str, str], Optional[str]]


def git_reader(cwd: str | Path = ".") -> Reader:
    """``read(rev, path)``: the file's text at a commit (``git show``), the file on disk for ``workspace``, or
    None when it is not there."""
    def read(rev: str, path: str) -> Optional[str]:
        if rev == "workspace":
            file = Path(cwd) / path
            return file.read_text() if file.is_file() else None
        try:
            proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True)
        except OSError:  # no git
            return None
        return proc.stdout if proc.returncode == 0 else None
    return read


def _method_metrics(method: str, rev: str, data: dict, read: Reader) -> tuple[Optional[dict], str]:
    """The flat ``overall`` numbers of one method of one experiment, or ``(None, why skipped)``."""
    path = MAIN_SUMMARY if method == MAIN_METHOD else f"metrics/methods/{method}/summary.json"
    text = read(rev, path)
    if text is not None:
        try:
            overall = json.loads(text).get("overall")
        except (json.JSONDecodeError, AttributeError):
            return None, f"{path} not a summary"
        if isinstance(overall, dict):
            return flatten(overall), ""
    if method == MAIN_METHOD and (row := _pooled_row(data)) is not None:
        return flatten(row), ""
    return None, f"no {path}" + (f" or {HEADLINE_FILE}" if method == MAIN_METHOD else "")


def _pooled_row(data: dict) -> dict | None:
    """evaluate's pooled row from an experiment's DVC metrics (headline.json, or classes/all.json before it)."""
    row = file_data(data, "metrics", HEADLINE_FILE)
    return row if row is not None else file_data(data, "metrics", CLASSES_ALL)


def _setting_key(params: dict, ignore: tuple = ()) -> tuple:
    """The params without ``seed`` and the ``ignore``d keys (a key and everything under it: ``train`` drops
    ``train.steps`` too)."""
    dropped = (SEED, *ignore)
    flat = {k: v for k, v in flatten(params).items() if not any(k == d or k.startswith(d + ".") for d in dropped)}
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in flat.items()))


def _experiments(doc: list, include_workspace: bool, skipped: Counter, ignore: tuple = ()) -> list[dict]:
    """Usable revisions, one per (setting, seed): experiments before baseline commits, then in document order."""
    found = []
    for entry, kind, executor, _ in revisions(doc, include_workspace):
        data, params, why = usable(entry, executor, PARAMS_FILE)
        if data is None:
            skipped[why] += 1
            continue
        seed = params.get(SEED)
        if isinstance(seed, bool) or not isinstance(seed, int):
            skipped[f"no integer param {SEED}"] += 1
            continue
        row = _pooled_row(data)
        if row is not None and drawn_at_other_scale(row, as_float(params.get("guidance_scale"))):
            skipped["metrics computed at another scale"] += 1
            continue
        found.append({"experiment": revision_name(entry, kind), "rev": str(entry.get("rev") or ""), "kind": kind,
                      "seed": seed, "params": params, "setting": _setting_key(params, ignore), "data": data})
    found.sort(key=lambda e: e["kind"] != "experiment")  # stable: document order within each kind
    kept, seen = [], set()
    for exp in found:
        if (exp["setting"], exp["seed"]) in seen:
            skipped["same params and seed as another experiment"] += 1
            continue
        seen.add((exp["setting"], exp["seed"]))
        kept.append(exp)
    return kept


def collect(doc: list, read: Reader, include_workspace: bool = False, ignore: tuple = ()) -> tuple[list[dict], Counter]:
    """One record per (experiment, method): experiment, rev, kind, seed, setting (the params without seed and
    ``ignore`` as a hashable key), params, method and ``metrics`` (the aggregated numbers, flat). Returns
    ``(records, skipped)``. ``ignore=("methods",)`` pools experiments that ran different method lists: each
    method's n is then the number of seeds it ran in."""
    skipped: Counter = Counter()
    records = []
    for exp in _experiments(doc, include_workspace, skipped, tuple(ignore)):
        listed = exp["params"].get("methods")
        listed = [str(m) for m in listed] if isinstance(listed, list) else []
        for method in [MAIN_METHOD] + [m for m in listed if m != MAIN_METHOD]:  # the main pipeline always ran
            flat, why = _method_metrics(method, exp["rev"], exp["data"], read)
            if flat is None:
                skipped[why] += 1
                continue
            metrics = {k: as_float(v) for k, v in flat.items() if HEADLINE.match(k) or RARITY.match(k)}
            records.append({**{k: exp[k] for k in ("experiment", "rev", "kind", "seed", "setting", "params")},
                            "method": method, "metrics": metrics})
    if not records:
        why = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "none listed"
        raise UserError(f"no experiment with {PARAMS_FILE} and metrics in `dvc exp show` (skipped: {why}); run e.g. "
                        f"`dvc exp run --queue -S seed=0,1,2` then `dvc queue start -j 1`")
    return records, skipped


def setting_labels(records: list[dict]) -> tuple[dict, list[str]]:
    """``{setting: label}`` naming only the params that differ between settings, and those params' names."""
    settings = {r["setting"]: dict(r["setting"]) for r in records}
    keys = sorted({k for s in settings.values() for k in s})
    varying = [k for k in keys if len({s.get(k) for s in settings.values()}) > 1]
    labels = {key: "; ".join(f"{k}={_shown(s.get(k))}" for k in varying) or ONE_SETTING for key, s in settings.items()}
    return labels, varying


def _shown(value: Optional[str]) -> str:
    """A JSON-encoded param value as the user wrote it (``"pndm"`` -> ``pndm``; missing -> ``–``)."""
    if value is None:
        return "–"
    decoded = json.loads(value)
    return decoded if isinstance(decoded, str) else json.dumps(decoded)


def _stats(values: list[float]) -> dict:
    def tidy(x: float) -> float:  # 0.4000000000000001 -> 0.4 in the CSV
        return float(f"{x:.12g}")
    return {"mean": tidy(statistics.fmean(values)), "sd": tidy(statistics.stdev(values)) if len(values) > 1 else None,
            "n": len(values)}


def _setting_order(setting: tuple, varying: list[str]) -> tuple:
    """Settings sorted by their varying params, numbers as numbers (scale 2 before 10)."""
    values = dict(setting)
    out = []
    for k in varying:
        v = json.loads(values[k]) if k in values else None
        number = as_float(v)
        out.append((0, number, "") if number is not None else (1, 0.0, json.dumps(v)))
    return tuple(out)


def _metric_order(records: list[dict]) -> list[str]:
    """Every metric key, FID / LPIPS / BioCLIP / 1-cos / accuracy, levels and buckets in summary order."""
    first: dict[str, int] = {}
    for r in records:
        for k in r["metrics"]:
            first.setdefault(k, len(first))

    def rank(key: str) -> tuple:
        head = HEADLINE.match(key)
        if head:
            return 0, KIND_ORDER[head["kind"] or "acc"], first[key]
        return 1, first[key]
    return sorted(first, key=rank)


def aggregate(records: list[dict]) -> pd.DataFrame:
    """Per setting, method and metric: mean, sd, n and the seeds (the CSV, one row per metric)."""
    labels, varying = setting_labels(records)
    order = _metric_order(records)
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: _setting_order(r["setting"], varying)):  # stable: methods in params order
        groups.setdefault((labels[r["setting"]], r["method"]), []).append(r)
    rows = []
    for (label, method), group in groups.items():
        setting = dict(group[0]["setting"])
        for key in order:
            pairs = [(r["seed"], r["metrics"][key]) for r in group if r["metrics"].get(key) is not None]
            if not pairs:
                continue
            match = HEADLINE.match(key) or RARITY.match(key)
            parts = match.groupdict()
            rows.append({"setting": label, **{k: _shown(setting.get(k)) for k in varying}, "method": method,
                         "metric": key, "bucket": parts.get("bucket") or "", "level": parts.get("level") or "",
                         **_stats([v for _, v in pairs]),
                         "seeds": " ".join(str(s) for s in sorted(seed for seed, _ in pairs))})
    columns = ["setting", *varying, "method", "metric", "bucket", "level", "mean", "sd", "n", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def paired(records: list[dict], reference: str = MAIN_METHOD) -> pd.DataFrame:
    """Per setting, method and metric: the method's number minus ``reference``'s in the same experiment (same
    seed: the same split, probe and noise seeds), mean ± sd and n over the seeds where both have it. The
    seed-to-seed spread of a metric is mostly shared by the methods of one seed, so a paired difference
    separates two methods with fewer seeds than their two means ± sd do. ``better``: in how many of those seeds
    the method beats ``reference`` (a smaller FID / LPIPS / 1-cos, a larger accuracy or score; a tie is not a
    win). Counts (``n_images``) are left out."""
    labels, varying = setting_labels(records)
    order = _metric_order(records)
    runs: dict[tuple, dict[str, dict]] = {}
    for r in sorted(records, key=lambda r: _setting_order(r["setting"], varying)):
        runs.setdefault((r["setting"], r["seed"]), {})[r["method"]] = r["metrics"]
    diffs: dict[tuple, dict[str, list]] = {}
    for (setting, seed), methods in runs.items():
        ref = methods.get(reference)
        for method, metrics in methods.items():
            if ref is None or method == reference:
                continue
            per_metric = diffs.setdefault((setting, method), {})
            for key, value in metrics.items():
                if value is not None and ref.get(key) is not None and not key.endswith(("n_images", "n_species")):
                    per_metric.setdefault(key, []).append((seed, value - ref[key]))
    rows = []
    for (setting, method), per_metric in diffs.items():
        values = dict(setting)
        for key in (k for k in order if k in per_metric):
            pairs = per_metric[key]
            parts = (HEADLINE.match(key) or RARITY.match(key)).groupdict()
            lower = parts.get("kind") in LOWER_IS_BETTER
            rows.append({"setting": labels[setting], **{k: _shown(values.get(k)) for k in varying}, "method": method,
                         "vs": reference, "metric": key, "bucket": parts.get("bucket") or "",
                         "level": parts.get("level") or "", **_stats([v for _, v in pairs]),
                         "better": sum((v < 0) if lower else (v > 0) for _, v in pairs),
                         "seeds": " ".join(str(s) for s in sorted(seed for seed, _ in pairs))})
    columns = ["setting", *varying, "method", "vs", "metric", "bucket", "level", "mean", "sd", "n", "better", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def run(out: str | Path, source: ExpSource = ExpSource(), read: Optional[Reader] = None, ignore: tuple = (),
        from_snapshot: str | Path | None = None,
        save_snapshot: str | Path | None = None) -> tuple[pd.DataFrame, Counter]:
    """Collect, aggregate, write ``out`` (.md) and the CSV next to it (or the other way round).

    ``from_snapshot``: read the experiments from a snapshot folder (:mod:`taxadiffusion.analysis.snapshot`) instead of
    dvc and git; ``save_snapshot``: also write what was read into a snapshot folder."""
    out = Path(out)
    if out.suffix.lower() not in (".md", ".csv"):
        raise UserError(f"--out {out}: use a .md or .csv file name (the other one is written next to it)")
    if from_snapshot is not None:
        if source.json_file is not None:
            raise UserError("--snapshot and --json both name the `dvc exp show` document; give one")
        source = dataclasses.replace(source, json_file=snapshot.exp_show_file(from_snapshot))
        read = snapshot.reader(from_snapshot)
    doc = source.document()
    reader = snapshot.RecordingReader(read or git_reader(source.cwd))
    records, skipped = collect(doc, reader, source.include_workspace, ignore)
    if save_snapshot is not None:
        kept = snapshot.save(save_snapshot, doc, reader.found)
        log.info("aggregate: snapshot of %d revision file(s) in %s", kept, save_snapshot)
    table, diffs = aggregate(records), paired(records)
    with atomic_path(out.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out.with_name(out.stem + "_paired.csv")) as tmp:
        diffs.to_csv(tmp, index=False)
    write_text(out.with_suffix(".md"), to_markdown(table, skipped, diffs))
    sizes = Counter((r["setting"], r["seed"]) for r in records)
    if len({s for s, _ in sizes}) == len(sizes):
        log.warning("aggregate: every setting has one seed; run e.g. `dvc exp run --queue -S seed=0,1,2`")
    log.info("aggregate: %d experiment(s), %d setting(s); skipped %s; wrote %s and %s", len(sizes),
             len({s for s, _ in sizes}), dict(skipped) or "none", out.with_suffix(".md"), out.with_suffix(".csv"))
    return table, skipped


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taxadiffusion aggregate", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--out", default="metrics/seeds.md", help="Markdown table; the CSV goes next to it")
    ExpSource.add_arguments(parser)
    parser.add_argument("--ignore", action="append", default=[], metavar="PARAM",
                        help="a param (and its sub-keys) that does not separate settings, e.g. `--ignore methods` "
                             "to pool experiments that ran different method lists; repeatable")
    parser.add_argument("--save-snapshot", default=None, metavar="DIR",
                        help="also keep what was read (the exp show document, each summary read at a commit) in DIR, "
                             "so the tables can be re-derived without the experiments "
                             "(taxadiffusion/analysis/snapshot.py)")
    parser.add_argument("--snapshot", default=None, metavar="DIR",
                        help="read a folder written by --save-snapshot instead of running dvc and git")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    run_tool(lambda args: run(args.out, ExpSource.from_args(args),
                              ignore=tuple(args.ignore), from_snapshot=args.snapshot,
                              save_snapshot=args.save_snapshot), parser(), argv)


if __name__ == "__main__":
    main()
