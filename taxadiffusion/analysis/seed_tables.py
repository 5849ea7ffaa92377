"""The Markdown of ``taxadiffusion aggregate``: mean ± sd (n) tables per setting and method, by rarity, and the
paired differences against ``taxadiffusion``."""

from __future__ import annotations

import re
from collections import Counter
from typing import Optional

import pandas as pd

from taxadiffusion.core.text import markdown_cell
from taxadiffusion.metrics.tables import _fmt

# The numbers aggregated, as dotted paths into a summary's `overall` (or the classes/all.json row).
HEADLINE = re.compile(r"^(?P<backbone>[^.]+)\.(?:(?P<kind>fid|lpips|score|dist)|(?P<acc>acc)\.(?P<level>[^.]+))$")
RARITY = re.compile(r"^probe\.acc_by_rarity\.(?P<bucket>[^.]+)\."
                    r"(?:acc\.(?P<level>[^.]+)|(?P<count>n_images|n_species))$")
KIND_ORDER = {"fid": 0, "lpips": 1, "score": 2, "dist": 3, "acc": 4}
KIND_LABEL = {"fid": "FID", "lpips": "LPIPS", "score": "BioCLIP", "dist": "1-cos"}
COUNT_LABEL = {"n_images": "# images", "n_species": "# species"}



def _column(metric: str) -> str:
    """The Markdown column of a metric (a rarity bucket is a row, so it is not part of the column)."""
    head = HEADLINE.match(metric)
    if head:
        name = f"acc {head['level']}" if head["acc"] else KIND_LABEL[head["kind"]]
        return f"{name} ({head['backbone']})"
    rare = RARITY.match(metric)
    return f"acc {rare['level']} (probe)" if rare["level"] else COUNT_LABEL[rare["count"]]


def _number(column: str, value: float) -> str:
    return f"{value:.4g}" if column.startswith("#") else _fmt(column, value)  # counts: no fixed decimals


def _cell(row: pd.Series, column: str, n_row: int) -> str:
    sd = "" if pd.isna(row["sd"]) else f" ± {_number(column, float(row['sd']))}"
    extra = f" (n={row['n']})" if row["n"] < n_row else ""
    wins = f" [{row['better']}/{row['n']}]" if "better" in row.index else ""  # paired tables only
    return f"{_number(column, float(row['mean']))}{sd}{wins}{extra}"


def _markdown_table(table: pd.DataFrame, rarity: bool, prefix: str = "") -> str:
    """One Markdown row per setting and method (and rarity bucket): ``mean ± sd`` per metric."""
    sub = table[table["metric"].map(lambda m: bool(RARITY.match(m))) == rarity]
    sub = sub.assign(column=sub["metric"].map(_column))
    cols = list(dict.fromkeys(sub["column"]))
    by = ["setting", "method"] + (["bucket"] if rarity else [])
    head = by[:2] + (["training images per species"] if rarity else []) + ["n", "seeds"] + [prefix + c for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for group, rows in sub.groupby(by, sort=False):
        seeds = sorted({int(s) for text in rows["seeds"] for s in text.split()})
        cells = {c: _cell(row, c, len(seeds)) for c, (_, row) in zip(rows["column"], rows.iterrows())}
        line = [*group, str(len(seeds)), ", ".join(map(str, seeds)), *(cells.get(c, "–") for c in cols)]
        lines.append("| " + " | ".join(markdown_cell(x) for x in line) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame, skipped: Counter, diffs: Optional[pd.DataFrame] = None) -> str:
    has_rarity = table["metric"].map(lambda m: bool(RARITY.match(m))).any()
    text = ["# Mean ± sd over seeds\n",
            "Experiments of `dvc exp show` grouped by their params without `seed` (a *setting*; only the params that "
            "differ between settings are named). mean ± sample standard deviation (n - 1) over the n seeds; "
            "(n=k): only k of them have that number.\n",
            _markdown_table(table, rarity=False)]
    if has_rarity:
        text += ["\n## Probe accuracy of generated images by rarity\n",
                 "Buckets by the number of training images of the species each image was drawn for "
                 "(evaluate: `overall.probe.acc_by_rarity`).\n",
                 _markdown_table(table, rarity=True)]
    if diffs is not None and len(diffs):
        ref = diffs["vs"].iloc[0]
        text += [f"\n## Paired differences against {ref}\n",
                 f"Each method's number minus {ref}'s in the same experiment (the same seed: split, probe and noise "
                 "seeds), mean ± sd over the seeds both ran. Negative Δ FID / Δ 1-cos and positive Δ acc favour the "
                 f"method over {ref}; [k/n]: the method is the better one in k of those n seeds.\n",
                 _markdown_table(diffs, rarity=False, prefix="Δ ")]
        if diffs["metric"].map(lambda m: bool(RARITY.match(m))).any():
            text += ["\n### By rarity\n", _markdown_table(diffs, rarity=True, prefix="Δ ")]
    gone = ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) or "none"
    text.append(f"\nSkipped: {gone}.\n")
    return "\n".join(text)


