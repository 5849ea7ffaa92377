"""Charts for the report (matplotlib, Agg, PNG bytes): per-class bars, per-level accuracy, training curves.

Training curves are the dvclive files the training runs leave in ``metrics/train/<run>/plots/metrics/*.tsv``
(``step`` and one value column), see docs/architecture.md ``train@<level>``.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def bar_chart(table: pd.DataFrame, label_col: str, value_col: str) -> bytes:
    """A horizontal bar chart of one CSV column."""
    plt = _plt()
    data = table[[label_col, value_col]].dropna()
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * max(len(data), 2) + 1.0))
    ax.barh([str(x) for x in data[label_col]], data[value_col].astype(float), color="#4a7ab5")
    ax.invert_yaxis()
    ax.set_title(value_col)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def level_accuracy_chart(levels: list[str], generated: list, real: list) -> bytes:
    """Probe top-1 per level: generated images next to the real test images (the probe's ceiling)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    x = range(len(levels))
    for offset, values, label, colour in ((-0.2, generated, "generated", "#4a7ab5"),
                                          (0.2, real, "real test images", "#b0b0b0")):
        ax.bar([i + offset for i in x], [float("nan") if v is None else v for v in values], width=0.4,
               label=label, color=colour)
    ax.set_xticks(list(x), levels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probe top-1 accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def read_curve(run_dir: Path, metric: str) -> pd.DataFrame | None:
    """``<run_dir>/plots/metrics/<metric>.tsv`` as a frame (``step``, ``value``), None if absent or unreadable."""
    path = run_dir / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, sep="\t")
    except (ValueError, OSError):
        return None
    if "step" not in table.columns or metric not in table.columns or table.empty:
        return None
    return pd.DataFrame({"step": table["step"], "value": pd.to_numeric(table[metric], errors="coerce")})


def curves_chart(groups: list[tuple[str, dict[str, pd.DataFrame]]], metric: str) -> bytes:
    """One panel per group (e.g. progressive levels, methods), one line per run: ``metric`` vs step."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.4), squeeze=False)
    for ax, (title, runs) in zip(axes[0], groups):
        for name, curve in runs.items():
            ax.plot(curve["step"], curve["value"], label=name, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)
