"""The ``report`` stage: ``reports/index.html`` from ``metrics/`` — tables, bar charts, sample grids.

One self-contained file (charts and grids embedded as base64 PNG), so it opens offline and can be attached
or archived as is.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd

from .errors import UserError
from .io import write_text
from .metrics.tables import DAGGER, _fmt, class_table, level_table

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.charts img{max-width:48%;margin:4px}.grid img{max-width:100%;image-rendering:pixelated}
.note{color:#555;font-size:13px}code{background:#f4f4f4;padding:1px 3px}
"""


def _png_b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _html_table(table: pd.DataFrame, dagger_cols: tuple = (), flag: str = "fid_small_sample") -> str:
    cols = [c for c in table.columns if c != flag]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            text = _fmt(c, None if pd.isna(row[c]) else row[c])
            if c in dagger_cols and flag in table.columns and bool(row[flag]) and text != "–":
                text += DAGGER
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def bar_chart(table: pd.DataFrame, label_col: str, value_col: str) -> bytes:
    """A horizontal bar chart (matplotlib, Agg) of one CSV column, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[[label_col, value_col]].dropna()
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * max(len(data), 2) + 1.0))
    ax.barh([str(x) for x in data[label_col]], data[value_col].astype(float), color="#4a7ab5")
    ax.invert_yaxis()
    ax.set_title(value_col)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def build_report(metrics_dir: str | Path = "metrics", out: str | Path = "reports/index.html") -> Path:
    metrics_dir, out = Path(metrics_dir), Path(out)
    summary_path = metrics_dir / "summary.json"
    if not summary_path.exists():
        raise UserError(f"{summary_path}: not found (run the evaluate stage first: dvc repro evaluate)")
    summary = json.loads(summary_path.read_text())
    levels = list(summary["per_level"])
    classes = class_table(summary, levels)
    parts = [f"<html><head><meta charset='utf-8'><title>taxadiffusion evaluation</title><style>{CSS}</style></head><body>",
             "<h1>taxadiffusion evaluation</h1>"]
    data = summary["data"]
    parts.append(
        f"<p class='note'>{data['n_generated']} generated images, {data['n_real']} real reference images "
        f"(real split: <code>{html.escape(data['real_split'])}</code>), generation resolution "
        f"{data['generation_resolution'][0]}×{data['generation_resolution'][1]}{_sampling_note(data)}.</p>"
    )
    parts.append("<h2>Per class (Table S2 layout)</h2>")
    parts.append(_html_table(classes, tuple(c for c in classes.columns if c.startswith("FID"))))
    parts.append(f"<p class='note'>{DAGGER} FID over fewer than {data['min_images_for_fid']} images on one side "
                 "(<code>evaluate.min_images_for_fid</code>): biased and unstable.</p>")
    parts.append("<h2>Per taxonomic level</h2>")
    parts.append(_html_table(level_table(summary, levels)))
    parts.append("<h2>Overall</h2><table><tr><th>backbone</th><th>metric</th><th>value</th></tr>")
    for name, values in summary["overall"].items():
        for key, value in values.items():
            if value == {}:
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k} {_fmt('Acc', v)}" for k, v in value.items())
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(key)}</td><td>{html.escape(_fmt(key, value))}</td></tr>")
    parts.append("</table>")
    charts = []
    for csv in sorted((metrics_dir / "plots").glob("class_*.csv")):
        table = pd.read_csv(csv)
        for col in table.columns[1:]:
            if table[col].notna().any():
                charts.append(f"<img alt='{html.escape(col)}' src='{_png_b64(bar_chart(table, 'class', col))}'>")
    if charts:
        parts.append("<h2>Per-class charts</h2><div class='charts'>" + "".join(charts) + "</div>")
    grids = sorted((metrics_dir / "plots" / "grids").glob("*.png"))
    if grids:
        parts.append("<h2>Samples: generated (left) and real (right), one row per species</h2>")
        for g in grids:
            parts.append(f"<h3>{html.escape(g.stem)}</h3><div class='grid'><img alt='{html.escape(g.stem)}' "
                         f"src='{_png_b64(g.read_bytes())}'></div>")
    parts.append("<h2>Backbones and settings</h2><table><tr><th>backbone</th><th>setting</th><th>value</th></tr>")
    for name, info in summary["backbones"].items():
        for key, value in info.items():
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            parts.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(key)}</td><td style='text-align:left'>{html.escape(text)}</td></tr>")
    parts.append("</table></body></html>")
    write_text(out, "\n".join(parts) + "\n")
    return out


def _sampling_note(data: dict) -> str:
    """", sampled with pndm, 50 steps, taxaguide scale 2.0" from the manifest columns evaluate recorded."""
    gen = data.get("generation") or {}
    bits = [("sampled with ", "sampler", ""), ("", "steps", " steps"), ("", "guidance", ""), ("scale ", "scale", "")]
    words = [f"{pre}{'/'.join(html.escape(str(v)) for v in gen[key])}{post}" for pre, key, post in bits if gen.get(key)]
    return (", " + ", ".join(words[:2]) + (", " + " ".join(words[2:]) if words[2:] else "")) if words else ""
