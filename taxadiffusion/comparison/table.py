"""Stage ``compare``: the methods table, one row per method (``metrics/methods.csv`` / ``.md``).

Reads what ``method@<m>`` wrote (``metrics/methods/<m>/summary.json`` and ``method.json``, see
:mod:`taxadiffusion.comparison.sample`); pandas only, so the stage starts in a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from taxadiffusion.comparison.methods import BUDGETS, LABELS, METHOD_FILE, PAPER_FISHNET
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json, write_text


@dataclass(frozen=True)
class TableSetting:
    """What the table's numbers come from, stated under it (``dataset.name``, ``dataset.resolution``,
    ``model.preset`` / ``model.pretrained``, ``train.steps``): a methods table is read against its own setting,
    and the paper's column appears only where the paper has numbers for that dataset."""

    dataset: str
    resolution: int
    preset: str
    pretrained: str
    steps: int


def _overall_row(method: str, summary: dict, info: dict, levels: list[str], paper: dict) -> dict:
    overall = summary.get("overall", {})
    row = {"method": method, "description": LABELS[method], "train steps": info.get("train_steps")}
    for backbone, values in overall.items():
        if "fid" in values:
            row[f"FID ({backbone})"] = values["fid"]
        if "lpips" in values:
            row[f"LPIPS ({backbone})"] = values["lpips"]
        if "score" in values:
            row[f"BioCLIP ({backbone})"] = values["score"]
        if backbone == "probe":
            row["probe dist"] = values.get("dist")
            for lv in levels:
                row[f"acc {lv} (probe)"] = values.get("acc", {}).get(lv)
    if method in paper:
        row["paper FishNet FID / LPIPS / BioCLIP"] = " / ".join(str(v) for v in paper[method])
    return row


def compare(methods: list[str], levels: list[str], methods_dir: str | Path, out_dir: str | Path,
            setting: TableSetting) -> pd.DataFrame:
    """``<out_dir>/methods.csv`` / ``.md``: one row per method, from ``<methods_dir>/<m>/summary.json``, with the
    setting stated under the table (and the paper's FishNet column only for FishNet)."""
    paper = PAPER_FISHNET if setting.dataset == "fishnet" else {}
    rows, budgets = [], {}
    for method in methods:
        paths = [Path(methods_dir) / method / name for name in ("summary.json", METHOD_FILE)]
        for path in paths:
            if not path.exists():
                raise UserError(f"{path}: missing; run `dvc repro method@{method}`")
        info = read_json(paths[1])
        if info.get("budget") is not None:
            budgets.setdefault(info["budget"], []).append(method)
        rows.append(_overall_row(method, read_json(paths[0]), info, levels, paper))
    table = pd.DataFrame(rows)
    write_text(Path(out_dir) / "methods.csv", table.to_csv(index=False))
    write_text(Path(out_dir) / "methods.md", _markdown(table) + "\n" + _setting_note(setting) + _budget_note(budgets))
    return table


def _budget_note(budgets: dict[str, list[str]]) -> str:
    """Which protocol set the trained baselines' steps (train.baseline_budget, docs/deviations.md)."""
    if not budgets:
        return "\nBaseline budget: no trained baseline in this table.\n"
    lines = [f"\nBaseline budget (train.baseline_budget: {b}; {', '.join(ms)}): {BUDGETS[b]}.\n"
             for b, ms in sorted(budgets.items())]
    return "".join(lines)


def _setting_note(setting: TableSetting) -> str:
    base = "the shipped tiny base" if setting.preset == "tiny" else f"{setting.preset} ({setting.pretrained})"
    note = (f"\nSetting: dataset `{setting.dataset}` at {setting.resolution} px, base model {base}, "
            f"{setting.steps:,} training steps per level (train.steps).")
    if setting.dataset == "fishnet":
        note += (" The paper column: FishNet, SD1.5 at 512 px, 250K steps per level, FID on Inception, LPIPS-vgg, "
                 "BioCLIP v1 (docs/method.md §6; via a third-party summary).")
    else:
        note += " The paper reports this table for FishNet only, so it has no column here."
    return note + "\n"


def _markdown(table: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)
