"""The ``report`` stage: ``reports/index.html``, one self-contained page that says what was run and shows it.

Sections (each ``<section id=...>``, always present; a part whose input is missing says so in a note):
a summary (what was trained, on what data, which backbone, how to read the numbers), the Table S2 tables,
per-level accuracy, training curves and previews, the supplement's Figs. S2/S5/S6 (``figures`` stage),
the guidance sweep, the methods table, per-class charts, sample grids and the backbone settings.
Every image is embedded as base64 PNG and the page has no scripts, so it opens offline as it is.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json, write_text
from taxadiffusion.figures import FIGURE_FILES, FIGURES_FILE, PREVIEW_GLOB
from taxadiffusion.metrics.tables import (
    DAGGER,
    RARITY_NOTE,
    _fmt,
    class_table,
    group_level,
    level_table,
    pairs_note,
    rarity_table,
    sample_size_note,
)
from taxadiffusion.report.charts import bar_chart, curves_chart, level_accuracy_chart, read_curve

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.charts img{max-width:48%;margin:4px}.grid img,figure img{max-width:100%;image-rendering:pixelated}
figure{margin:1em 0}figcaption{font-size:13px;color:#444;max-width:900px}
.previews figure{display:inline-block;margin:4px 8px;vertical-align:top}
.note{color:#555;font-size:13px}code{background:#f4f4f4;padding:1px 3px}nav a{margin-right:.8em}
"""

SECTIONS = (
    ("summary", "Summary"), ("classes", "Per {group} (Table S2 layout)"), ("levels", "Per taxonomic level"),
    ("overall", "Overall"), ("training", "Training curves"), ("previews", "Previews during training"),
    ("fig-s2", "Taxon embeddings (Fig. S2)"), ("fig-s5", "Guidance scale (Fig. S5)"),
    ("fig-s6", "Attention per level (Fig. S6)"), ("sweep", "Guidance-scale sweep (metrics)"),
    ("methods", "Methods and ablations"), ("charts", "Per-{group} charts"), ("samples", "Samples"),
    ("settings", "Backbones and settings"),
)
CAPTIONS = {  # what each supplement figure shows, and its counterpart in the paper (docs/figures.md)
    "s2": "Each point is one taxon of level <b>{level}</b> ({n_taxa} taxa, {n_classes} classes), coloured by its "
          "class. Left: the frozen text encoder's states of the lineage texts <code>&lt;level&gt;: &lt;name&gt;</code> "
          "down to that level, summed over the levels; right: the trained condition module's context for the "
          "same lineage cut at that level. Both are mean-pooled over the token positions and projected with "
          "t-SNE (perplexity {perplexity:.3g}). Silhouette by class, in the original {dim}-d spaces (higher: "
          "a class's taxa lie closer together): text encoder {sil_text}; condition module {sil_cond}. "
          "Paper counterpart: supplement Fig. S2.",
    "s5": "Rows: {n} test taxa, one per class in turn, most training images first. Columns: TaxaGuide scale "
          "s = {scales} (s = 1 + w; at 0 only the guidance branch, the class-level condition, is left), every "
          "cell of a row from the same starting noise (the seed of image 0 in mass generation); then real "
          "training images of the taxon. Paper counterpart: supplement Fig. S5 (scales 0-10; 6 was kept: at "
          "0-2 fine traits are weak, at 8-10 diversity drops and artifacts appear).",
    "s6": "Two test taxa of {group_level} <i>{group}</i>: the generated image, then per taxonomic level where the "
          "UNet's queries attend when that level's own module output is the context, read at the tokens of "
          "the level's name, averaged over heads, those tokens, every cross-attention layer and every "
          "denoising step (red: high; each map scaled to its own range). The real context is the sum over "
          "levels, whose attention logits are exactly the sum of these per-level logits (docs/figures.md). "
          "Paper counterpart: supplement Fig. S6.",
}


def section_titles(group: str = "class") -> list[tuple[str, str]]:
    """:data:`SECTIONS` with the per-group ones named by ``evaluate.group_level`` (summary.json ``data``)."""
    return [(sid, title.format(group=group)) for sid, title in SECTIONS]


def _png_b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _img(data: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt, quote=True)}' src='{_png_b64(data)}'>"


def _note(text: str) -> str:
    return f"<p class='note'>{text}</p>"


def _figure(data: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(data, alt)}<figcaption>{caption}</figcaption></figure>"


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


def run_info(dataset, model, train, levels: list[str], seed: int) -> dict:
    """What the summary says about the run, from the params sections (the stage passes them)."""
    return {"dataset": dataset.name, "resolution": dataset.resolution, "preset": model.preset,
            "pretrained": model.pretrained, "levels": list(levels), "steps": train.steps,
            "batch_size": train.batch_size, "lr_first": train.lr_first, "lr": train.lr, "seed": seed}


# --------------------------------------------------------------------------------------------------
# Sections


def _summary(summary: dict, run: dict | None, prepared: dict | None) -> str:
    data, levels = summary["data"], list(summary["per_level"])
    items = []
    if run:
        items.append(
            f"<b>Trained</b>: TaxaDiffusion, one condition module per level, progressively "
            f"{' → '.join(html.escape(lv) for lv in run['levels'])} (the UNet LoRA with level 0 only), "
            f"{run['steps']} steps per level at batch {run['batch_size']} (lr {run['lr_first']:g} at level 0, "
            f"{run['lr']:g} after), seed {run['seed']}, on the base model <code>{html.escape(run['preset'])}</code> "
            f"(<code>{html.escape(str(run['pretrained']))}</code>) at {run['resolution']} px.")
    if prepared:
        splits, taxa = prepared.get("splits", {}), prepared.get("taxa", {})
        counts = ", ".join(f"{n} {html.escape(str(lv))}" for lv, n in taxa.items())
        items.append(f"<b>Data</b>: <code>{html.escape(str(prepared.get('dataset', run and run['dataset'])))}</code>, "
                     f"{prepared.get('rows_kept', '?')} of {prepared.get('rows_in', '?')} annotation rows kept, "
                     f"{splits.get('train', '?')} train / {splits.get('test', '?')} test images; {counts}.")
    elif run:
        items.append(f"<b>Data</b>: <code>{html.escape(run['dataset'])}</code> (no prepare report given).")
    items.append(f"<b>Generated</b>: {data['n_generated']} images of the test taxa{_sampling_note(data)}; compared "
                 f"with {data['n_real']} real images (split <code>{html.escape(data['real_split'])}</code>"
                 f"{_protocol_note(data)}).")
    names = ", ".join(f"<code>{html.escape(n)}</code> ({html.escape(str(b.get('metric', '')))})"
                      for n, b in summary["backbones"].items())
    items.append(f"<b>Backbones</b>: {names}.")
    how = [
        "FID (lower is better) is a Fréchet distance between real and generated features of the named backbone; "
        "FID (probe) uses the run's own small classifier, so it compares runs on the same data, not with the "
        "paper's Inception FID.",
        f"Acc &lt;level&gt; (probe): how often the probe puts a generated image in its intended taxon at that level "
        f"({', '.join(levels)}); the probe's accuracy on real test images is the ceiling to read it against.",
        "1-cos (probe), LPIPS: mean distance of generated/real pairs of a class (lower: closer); "
        + html.escape(pairs_note(summary).strip()),
        *_zeroshot_how(summary),
        f"{DAGGER}: a FID over fewer than {data['min_images_for_fid']} images on a side, biased and unstable.",
        "At small sizes a FID is mostly sample-size bias, so read it against its <b>FID floor</b> (the same FID "
        "between real images and other real images of the class at the same sizes: what the sample size alone "
        "adds) and against <b>KID</b>, which has no sample-size bias (0 or below: no difference this sample "
        "can show).",
    ]
    return ("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul><p><b>How to read the numbers</b></p><ul>"
            + "".join(f"<li>{h}</li>" for h in how) + "</ul>")


def _protocol_note(data: dict) -> str:
    """", protocol authors: ..." when evaluate.protocol is not the default (docs/method.md §5 "Two protocols")."""
    if data.get("protocol") != "authors":
        return ""
    size = "x".join(str(s) for s in data.get("comparison_size", []))
    return (f"; <code>evaluate.protocol: authors</code>, the co-author's evaluation scripts: every real image of the "
            f"class, images stretched to {size}, their LPIPS pairs")


def _zeroshot_how(summary: dict) -> list[str]:
    """How to read BioCLIP's zero-shot accuracy, when it ran."""
    zs = [b["zeroshot"] for b in summary["backbones"].values() if "zeroshot" in b]
    if not zs:
        return []
    return [f"Acc top-1 / top-5 (bioclip): BioCLIP zero-shot over the dataset's {html.escape(zs[0]['candidates'])} "
            f"(prompts <code>{html.escape(str(zs[0]['prompt_example']))}</code>; a coarser level sums the species' "
            "probabilities): how often a generated image's own taxon is BioCLIP's first / among its five first "
            "guesses; the same on the real test images (real test acc) is the ceiling."]


def _classes(summary: dict, levels: list[str]) -> str:
    classes = class_table(summary, levels)
    reading = sample_size_note(summary["data"])
    return (_html_table(classes, tuple(c for c in classes.columns if c.startswith("FID")))
            + _note(f"{DAGGER} FID over fewer than {summary['data']['min_images_for_fid']} images on one side "
                    "(<code>evaluate.min_images_for_fid</code>): biased and unstable.")
            + (_note(html.escape(reading)) if reading else ""))


def _levels(summary: dict, levels: list[str]) -> str:
    gen = [summary["per_level"][lv]["probe"].get("acc") for lv in levels]
    real = [summary["overall"]["probe"].get("real_test_acc", {}).get(lv) for lv in levels]
    chart = _figure(level_accuracy_chart(levels, gen, real), "per-level accuracy",
                    "Probe top-1 accuracy per level: generated images (blue) next to the real test images (grey).")
    table = level_table(summary, levels)
    note = _note(f"{DAGGER} the mean over taxa includes FIDs over fewer than {summary['data']['min_images_for_fid']} "
                 "images on a side (how many: <i># small-sample taxa</i>): biased and unstable.")
    return _html_table(table, tuple(c for c in table.columns if c.startswith("FID"))) + note + chart


def _overall(summary: dict, levels: list[str]) -> str:
    rows = []
    for name, values in summary["overall"].items():
        for key, value in values.items():
            if value == {} or key in ("acc_by_rarity", "real_acc_by_rarity", "zeroshot"):  # tables of their own
                continue
            if key == "diversity":
                value = ", ".join(f"{k} {_fmt('1-cos', v)}" for k, v in value.items())
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {_fmt('Acc', v)}" for k, v in value.items())
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(key)}</td>"
                        f"<td>{html.escape(_fmt(key, value))}</td></tr>")
    table = "<table><tr><th>backbone</th><th>metric</th><th>value</th></tr>" + "".join(rows) + "</table>"
    rarity = rarity_table(summary, levels)
    if rarity.empty:
        return table
    return (table + "<h3>Probe accuracy by species rarity (BioCLIP zero-shot too, when it ran)</h3>"
            + _html_table(rarity) + f"<p class='note'>{html.escape(RARITY_NOTE.strip())}</p>")


def _training(train_dir: Path | None, levels: list[str]) -> str:
    if train_dir is None or not train_dir.is_dir():
        return _note(f"No training logs ({html.escape(str(train_dir))}): curves appear after <code>dvc repro</code>.")
    runs = [("progressive levels", [(lv, train_dir / lv) for lv in levels]),
            ("methods", [(p.name, p) for p in sorted((train_dir / "methods").glob("*")) if p.is_dir()])]
    names = sorted({f.stem for _, group in runs for _, d in group for f in (d / "plots" / "metrics").glob("*.tsv")},
                   key=lambda m: (m != "loss", m))
    charts = []
    for metric in names:  # one chart per dvclive metric (loss first), one panel per group of runs
        groups = [(title, {n: read_curve(d, metric) for n, d in group}) for title, group in runs]
        groups = [(title, {n: c for n, c in curves.items() if c is not None}) for title, curves in groups]
        groups = [(title, curves) for title, curves in groups if curves]
        if groups:
            caption = (f"Training {html.escape(metric)} (dvclive, one point per <code>train.log_every</code> "
                       "steps) per trained run.")
            charts.append(_figure(curves_chart(groups, metric), f"training {metric}", caption))
    if not charts:
        return _note(f"No dvclive <code>plots/metrics/*.tsv</code> under {html.escape(str(train_dir))}.")
    rows = []
    for lv in levels:
        path = train_dir / lv / "run.json"
        info = read_json(path) if path.is_file() else {}
        # no wall times here: the report is a DVC output, and the same inputs must give the same bytes
        # (they are in scratch/train/<level>/timing.json)
        rows.append({"level": lv, "steps": info.get("steps"), "final loss": info.get("final_loss")})
    return "".join(charts) + _html_table(pd.DataFrame(rows))


def _previews(train_dir: Path | None, levels: list[str]) -> str:
    parts = []
    for lv in levels:
        files = sorted((train_dir / lv).glob(PREVIEW_GLOB)) if train_dir is not None else []
        if files:
            parts.append(f"<h3>{html.escape(lv)}</h3><div class='previews'>" + "".join(
                _figure(f.read_bytes(), f"preview {lv} {f.stem}", html.escape(f.stem)) for f in files) + "</div>")
    if not parts:
        return _note("No previews (<code>metrics/train/&lt;level&gt;/" + html.escape(PREVIEW_GLOB) + "</code>).")
    return (_note("Fixed-seed grids drawn during training (the same taxa and noise at every step of a level).")
            + "".join(parts))


def _supplement_figure(figures_dir: Path | None, key: str) -> str:
    info_path = figures_dir / FIGURES_FILE if figures_dir is not None else None
    if info_path is None or not info_path.is_file():
        return _note("Not drawn: run the <code>figures</code> stage (<code>dvc repro figures</code>).")
    info = read_json(info_path).get(key, {})
    if "skipped" in info:
        return _note(f"Skipped: {html.escape(str(info['skipped']))}.")
    path = figures_dir / FIGURE_FILES[key]
    if not path.is_file():
        return _note(f"{html.escape(str(path))}: missing.")
    return _figure(path.read_bytes(), f"Fig. {key.upper()}", _caption(key, info))


def _caption(key: str, info: dict) -> str:
    esc = {k: html.escape(str(v)) if isinstance(v, str) else v for k, v in info.items()}
    if key == "s2":
        sil = {p: "cosine {} / euclidean {}".format(*(_fmt("score", info[p]["silhouette"][m])
                                                     for m in ("cosine", "euclidean")))
               for p in ("text_encoder", "condition_module")}
        return CAPTIONS["s2"].format(**esc, sil_text=sil["text_encoder"], sil_cond=sil["condition_module"])
    if key == "s5":
        return CAPTIONS["s5"].format(n=len(info["taxa"]), scales=", ".join(f"{s:g}" for s in info["scales"]))
    return CAPTIONS["s6"].format(group_level=esc["group_level"], group=html.escape(info["group"].split("/")[-1]))


def _sweep(metrics_dir: Path) -> str:
    png, csv = metrics_dir / "guidance_sweep.png", metrics_dir / "guidance_sweep.csv"
    if not png.is_file():
        return _note("No sweep: <code>dvc exp run --queue -S guidance_scale=0,2,4,6,8,10</code>, "
                     "<code>dvc queue start</code>, then <code>taxadiffusion sweep</code> (README).")
    table = _html_table(pd.read_csv(csv)) if csv.is_file() else ""
    return _figure(png.read_bytes(), "guidance sweep", "Metrics of DVC experiments that differ only in "
                   "<code>guidance_scale</code> (the supplement's B.5 sweep, measured).") + table


def _methods(metrics_dir: Path) -> str:
    csv = metrics_dir / "methods.csv"
    table = pd.read_csv(csv) if csv.is_file() else None
    if table is None or len(table) < 2:
        rows = 0 if table is None else len(table)
        return _note(f"{rows} method row(s) in <code>metrics/methods.csv</code>: add baselines and ablations with "
                     "<code>dvc exp run -S 'methods=[taxadiffusion,sd,lora,full,joint,random_level,cfg]'</code>.")
    return _html_table(table) + _note("Species-level numbers per method; the last column is the paper's FishNet "
                                      "row (docs/method.md §6), not comparable in absolute terms.")


def _charts(metrics_dir: Path, group: str) -> str:
    charts = []
    for csv in sorted((metrics_dir / "plots").glob(f"{group}_*.csv")):  # tables.write_tables: one per metric
        table = pd.read_csv(csv)
        charts += [_img(bar_chart(table, group, col), col) for col in table.columns[1:] if table[col].notna().any()]
    return "<div class='charts'>" + "".join(charts) + "</div>" if charts else _note(f"No per-{group} plot CSVs.")


def _samples(metrics_dir: Path) -> str:
    grids = sorted((metrics_dir / "plots" / "grids").glob("*.png"))
    if not grids:
        return _note("No sample grids.")
    return _note("Generated (left) and real (right), one row per species.") + "".join(
        f"<h3>{html.escape(g.stem)}</h3><div class='grid'>{_img(g.read_bytes(), g.stem)}</div>" for g in grids)


def _settings(summary: dict) -> str:
    rows = []
    for name, info in summary["backbones"].items():
        for key, value in info.items():
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(key)}</td>"
                        f"<td style='text-align:left'>{html.escape(text)}</td></tr>")
    return "<table><tr><th>backbone</th><th>setting</th><th>value</th></tr>" + "".join(rows) + "</table>"


def build_report(metrics_dir: str | Path = "metrics", out: str | Path = "reports/index.html", *,
                 figures_dir: str | Path | None = None, train_dir: str | Path | None = None,
                 prepared_report: str | Path | None = None, run: dict | None = None) -> Path:
    """Write the report ``out`` from ``metrics_dir`` (``summary.json`` required; everything else optional)."""
    metrics_dir, out = Path(metrics_dir), Path(out)
    summary_path = metrics_dir / "summary.json"
    if not summary_path.exists():
        raise UserError(f"{summary_path}: not found (run the evaluate stage first: dvc repro evaluate)")
    summary = read_json(summary_path)
    levels = list(summary["per_level"])
    figures_dir = Path(figures_dir) if figures_dir is not None else None
    train_dir = Path(train_dir) if train_dir is not None else None
    prep = Path(prepared_report) if prepared_report is not None else None
    body = {
        "summary": _summary(summary, run, read_json(prep) if prep is not None and prep.is_file() else None),
        "classes": _classes(summary, levels), "levels": _levels(summary, levels), "overall": _overall(summary, levels),
        "training": _training(train_dir, levels), "previews": _previews(train_dir, levels),
        "fig-s2": _supplement_figure(figures_dir, "s2"), "fig-s5": _supplement_figure(figures_dir, "s5"),
        "fig-s6": _supplement_figure(figures_dir, "s6"), "sweep": _sweep(metrics_dir),
        "methods": _methods(metrics_dir), "charts": _charts(metrics_dir, group_level(summary)),
        "samples": _samples(metrics_dir),
        "settings": _settings(summary),
    }
    sections = section_titles(group_level(summary))
    nav = "<nav>" + "".join(f"<a href='#{sid}'>{html.escape(title)}</a>" for sid, title in sections) + "</nav>"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>taxadiffusion report</title>"
             f"<style>{CSS}</style></head><body><h1>taxadiffusion report</h1>", nav]
    parts += [f"<section id='{sid}'><h2>{html.escape(title)}</h2>{body[sid]}</section>" for sid, title in sections]
    parts.append("</body></html>")
    write_text(out, "\n".join(parts) + "\n")
    return out


def _sampling_note(data: dict) -> str:
    """", sampled with pndm, 50 steps, taxaguide scale 2.0" from the manifest columns evaluate recorded."""
    gen = data.get("generation") or {}
    bits = [("sampled with ", "sampler", ""), ("", "steps", " steps"), ("", "guidance", ""), ("scale ", "scale", "")]
    words = [f"{pre}{'/'.join(html.escape(str(v)) for v in gen[key])}{post}" for pre, key, post in bits if gen.get(key)]
    return (", " + ", ".join(words[:2]) + (", " + " ".join(words[2:]) if words[2:] else "")) if words else ""
