"""Tables and plot data from ``summary.json``: Table S2 layout per class, a per-level table, the probe accuracy
by rarity (training images per species), bar-plot CSVs, and ``<group>/<class>.json`` + ``<group>/all.json``: the
per-class table as metrics files. The "classes" are the taxa of ``evaluate.group_level`` (``<group>``; Table S2:
class): its name is in the file names (``<group>_metrics.csv``, ``plots/<group>_fid.csv``) and the table's first
heading ("Class name", "Order name").

Column names carry the backbone ("FID (inception)", "LPIPS (vgg)", "BioCLIP (bioclip-v1)", "FID (probe)").
A FID over fewer than ``evaluate.min_images_for_fid`` images per side gets a † in the Markdown table (and
``fid_small_sample`` in the CSV): FID is biased upwards and unstable with few samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from taxadiffusion.core.files import atomic_dir, atomic_path, write_json, write_text
from taxadiffusion.core.names import PathNames
from taxadiffusion.core.text import markdown_cell, plain_text

DAGGER = "†"


HEADLINE = "headline.json"  # metrics/headline.json: the pooled row, the DVC metrics of the stage


def group_level(summary: dict) -> str:
    """The level ``summary.json``'s ``per_class`` keys are taxa of (``evaluate.group_level``); ``class`` for a summary
    written before the setting existed (grouped by the first level, and headed "Class name" all the same)."""
    return summary["data"].get("group_level", "class")


def group_heading(summary: dict) -> str:
    """The per-group table's first heading: "Class name" (Table S2), "Order name", ..."""
    level = group_level(summary)
    return f"{level[:1].upper()}{level[1:]} name"


def _kinds(summary: dict) -> tuple[list[str], list[str], list[str]]:
    """Backbone names by metric: Fréchet (inception before probe), LPIPS nets, BioCLIP models."""
    info = summary["backbones"]
    fid = [n for n in ("inception", "probe") if n in info]
    lp = [n for n, v in info.items() if v.get("metric") == "LPIPS"]
    bio = [n for n, v in info.items() if v.get("metric") == "BioCLIP score"]
    return fid, lp, bio


def _pair_columns(e: dict, lp: list[str]) -> dict:
    """A class's generated-vs-real pairs, its drawn species without a real image, and the within-species diversity
    of its generated images next to that of its real ones (metrics/pairing.py), per distance."""
    row = {"# pairs": e["probe"].get("pairs"), "# species w/o real": e.get("species_without_real")}
    for name, metric in [("probe", "1-cos"), *((n, "LPIPS") for n in lp)]:
        div = e[name].get("diversity") or {}
        row.update({f"{metric} div. generated ({name})": div.get("generated"),
                    f"{metric} div. real ({name})": div.get("real")})
    return row


def _zeroshot_columns(e: dict, bio: list[str], level: str) -> dict:
    """BioCLIP zero-shot top-1 and top-5 at ``level`` (the finest) of a class's generated images, and top-1 of its
    real test images (the ceiling); all levels are in summary.json (metrics/zeroshot.py)."""
    out = {}
    for n in bio:
        zs = e[n].get("zeroshot") or {}
        out.update({f"Acc {level} top-1 ({n})": zs.get("top1", {}).get(level),
                    f"Acc {level} top-5 ({n})": zs.get("top5", {}).get(level),
                    f"Real test acc {level} top-1 ({n})": zs.get("real_test_top1", {}).get(level)})
    return out


def _zeroshot_rarity(summary: dict, bucket: str, levels: list[str]) -> dict:
    """BioCLIP zero-shot top-1 at ``levels`` of a rarity bucket's generated and real test images (no columns
    without a zero-shot classifier)."""
    out = {}
    for n in _kinds(summary)[2]:
        zs = summary["overall"].get(n, {}).get("zeroshot")
        if zs:
            gen, real = zs["by_rarity"].get(bucket, {}), zs["real_by_rarity"].get(bucket, {})
            out.update({f"Acc {lv} top-1 ({n})": gen.get("top1", {}).get(lv) for lv in levels})
            out.update({f"Real acc {lv} top-1 ({n})": real.get("top1", {}).get(lv) for lv in levels})
    return out


def pairs_note(summary: dict) -> str:
    """What the pairs are, and the drawn species left without a real image (summary.json ``data``)."""
    data = summary["data"]
    missing = data.get("species_without_real") or {}
    if data.get("protocol") == "authors":
        note = "Pairs (LPIPS, 1-cos): real_i with generated_i within each species, min(n_real, n_generated) of them"
    else:
        note = "Pairs (LPIPS, 1-cos): each generated image with a real image of its own species"
    note += ("; div.: mean distance of two images of the same species, generated next to real (higher: more "
             "diverse).")
    if missing.get("species"):
        note += (f" {missing['species']} drawn species ({missing['images']} generated images) without a real "
                 f"{data['real_split']} image: not paired; listed in summary.json `data.species_without_real`.")
    return note + "\n"


def class_table(summary: dict, levels: list[str]) -> pd.DataFrame:
    fid, lp, bio = _kinds(summary)
    heading = group_heading(summary)
    rows = []
    for cls, e in summary["per_class"].items():
        ips = e["images_per_species"]
        row = {
            heading: cls,
            "# generated images": e["n_generated"],
            "# species": e["n_species"],
            "images per species": ips if isinstance(ips, int) else f"{ips[0]}-{ips[1]}",
            "# real images": e["n_real"],
        }
        for n in fid:
            row.update(_fid_columns(n, e[n]))
        row.update({f"LPIPS ({n})": e[n]["lpips"] for n in lp})
        row.update({f"BioCLIP ({n})": e[n]["score"] for n in bio})
        row.update(_zeroshot_columns(e, bio, levels[-1]))
        row["1-cos (probe)"] = e["probe"]["dist"]
        row.update(_pair_columns(e, lp))
        row.update({f"Acc {lv} (probe)": e["probe"]["acc"][lv] for lv in levels})
        row["fid_small_sample"] = e["fid_small_sample"]
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):  # Table S2 order: largest classes first
        table = table.sort_values(["# generated images", heading], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def _fid_columns(name: str, e: dict) -> dict:
    """A feature backbone's FID and what to read it against (metrics/sample_size.py): the real-vs-real floor, the
    sd of FID over subsets, KID ± sd and its floor, precision / recall / density / coverage, the memorisation
    check. An entry written before these existed gives dashes."""
    subsets, mem = e.get("fid_subsets") or {}, e.get("memorisation") or {}
    return {f"FID ({name})": e["fid"], f"FID floor ({name})": e.get("fid_floor"),
            f"FID subset sd ({name})": subsets.get("sd"), f"KID ({name})": e.get("kid"),
            f"KID sd ({name})": e.get("kid_sd"), f"KID floor ({name})": e.get("kid_floor"),
            **{f"{k.capitalize()} ({name})": e.get(k) for k in ("precision", "recall", "density", "coverage")},
            f"NN-train ratio ({name})": mem.get("nn_train_ratio"),
            f"Closer than test p5 ({name})": mem.get("closer_than_test_p5")}


def level_table(summary: dict, levels: list[str]) -> pd.DataFrame:
    """One row per level; ``fid_small_sample`` (a † on its FIDs) when a FID averaged there rests on fewer than
    ``evaluate.min_images_for_fid`` images on a side."""
    fid, _, bio = _kinds(summary)
    rows = []
    for lv in levels:
        e = summary["per_level"][lv]
        small = e["probe"].get("n_taxa_small_sample", 0)
        row = {"Level": lv, "# taxa": e["n_taxa"], "# taxa with FID": e["probe"]["n_taxa_fid"],
               "# small-sample taxa": small}
        for n in fid:
            row.update({f"FID ({n}, mean over taxa)": e[n]["fid"],
                        f"FID floor ({n}, mean over taxa)": e[n].get("fid_floor"),
                        f"KID ({n}, mean over taxa)": e[n].get("kid")})
        row.update({f"BioCLIP ({n})": e[n]["score"] for n in bio})
        for n in bio:  # BioCLIP zero-shot at this level, generated and the real test ceiling (metrics/zeroshot.py)
            row.update({f"Acc top-1 ({n})": e[n].get("top1"), f"Acc top-5 ({n})": e[n].get("top5"),
                        f"Real test acc top-1 ({n})": e[n].get("real_test_top1"),
                        f"Real test acc top-5 ({n})": e[n].get("real_test_top5")})
        row["Acc (probe)"] = e["probe"]["acc"]
        row["Real test acc (probe)"] = summary["overall"]["probe"]["real_test_acc"].get(lv)
        row["fid_small_sample"] = small > 0
        rows.append(row)
    return pd.DataFrame(rows)


def rarity_table(summary: dict, levels: list[str]) -> pd.DataFrame:
    """One row per rarity bucket (``overall.probe.acc_by_rarity``, metrics/rarity.py): taxa, images, accuracy,
    and the probe's accuracy at the two finest levels on the real test images of the bucket (its ceiling;
    all levels are in summary.json)."""
    probe = summary["overall"]["probe"]
    real = probe.get("real_acc_by_rarity", {})
    finest = levels[-2:]
    real_cols = ["# real images", *(f"Real acc {lv} (probe)" for lv in finest)]
    rows = []
    for bucket, e in probe.get("acc_by_rarity", {}).items():
        row = {"Training images per species": bucket, "# species": e["n_species"], "# generated images": e["n_images"]}
        row.update({f"Acc {lv} (probe)": e["acc"].get(lv) for lv in levels})
        if real:
            r = real.get(bucket, {})
            row.update(dict(zip(real_cols, (r.get("n_images", 0), *(r.get("acc", {}).get(lv) for lv in finest)))))
        row.update(_zeroshot_rarity(summary, bucket, finest))
        rows.append(row)
    return pd.DataFrame(rows, columns=["Training images per species", "# species", "# generated images",
                                       *(f"Acc {lv} (probe)" for lv in levels), *(real_cols if real else []),
                                       *_zeroshot_rarity(summary, "", finest)])


RARITY_NOTE = (
    "\nRows: the number of images in the train split of the taxon each generated image was drawn for (the species "
    "at the default target level); bucket 0 (only when present): taxa without a training image. Accuracy: the "
    "probe's top-1 per level over the bucket's generated images (a taxon the probe never saw is not scored). "
    "Real acc: the same probe on the real test images of the bucket's taxa (test images only, whatever the "
    "reference: the probe trained on the others), the ceiling a generated image's score is read against. "
    "Columns with (bioclip-...), when BioCLIP ran: its zero-shot top-1 over the dataset's species, the same way "
    "(summary.json also has top-5 and every level).\n"
)


FLOOR_RULES = {
    "train-vs-reference": "the class's real reference against a seeded sample (without replacement) of "
                          "min(n_generated, n_train) of its real train images, which the reference does not hold",
    "reference-halves": "two disjoint seeded halves of the class's real reference (smaller than the comparison's "
                        "sides, so a higher floor)",
}


def sample_size_note(data: dict) -> str:
    """How to read FID at small sizes, and what the sample-size columns are (``summary.json`` ``data``); empty for
    a summary written before they existed."""
    ss = data.get("sample_size")
    if not ss:
        return ""
    return (
        "FID at these sizes is mostly sample-size bias: read it against its floor and KID. "
        "FID floor: the same FID between real images and other real images at the comparison's sizes "
        f"({FLOOR_RULES.get(ss['floor_rule'], ss['floor_rule'])}); a FID near its floor is as good as the sample "
        f"can show. FID subset sd: sd of FID over {ss['fid_subsets']} seeded subsets of "
        f"{ss['fid_subset_fraction']:.0%} of each side, drawn without replacement (min-max in summary.json; those "
        "FIDs rest on fewer images, so they mostly sit above the full one). KID: unbiased MMD² (cubic polynomial "
        f"kernel), mean and sd over {ss['kid_subsets']} subsets of min(n_real, n_generated, "
        f"{ss['kid_subset_size']}) images; it has no sample-size bias (near 0 or negative: no difference this sample "
        "can show). KID floor: the same for the floor's real images. Precision / recall (Kynkäänniemi et al.) and "
        f"density / coverage (Naeem et al.), k = {ss['prdc_k']}. NN-train ratio: median distance of the generated "
        "images to their nearest training image of the class, over the same for the real test images (well below "
        "1: copies of training images); Closer than test p5: the fraction of generated images nearer a training "
        "image than the closest 5% of test images (about 0.05 without copying). Draws seeded by evaluate.seed = "
        f"{ss['seed']}."
    )


def _fmt(col: str, value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        key = col.lower()
        fraction = ("precision", "recall", "density", "coverage", "closer")
        accuracy = key.startswith(("acc", "real test", "real_test", "real acc", *fraction))
        digits = 4 if key.startswith(("lpips", "1-cos", "dist", "kid")) else 3 if accuracy else 2
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(table: pd.DataFrame, dagger_cols: tuple = (), flag: str = "fid_small_sample") -> str:
    cols = [c for c in table.columns if c != flag]
    lines = ["| " + " | ".join(markdown_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            text = _fmt(c, row[c] if not pd.isna(row[c]) else None)
            if c in dagger_cols and flag in table.columns and bool(row[flag]) and text != "–":
                text += DAGGER
            cells.append(markdown_cell(text))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def write_tables(summary: dict, levels: list[str], out_dir: str | Path) -> None:
    out_dir, group = Path(out_dir), group_level(summary)
    fid, lp, bio = _kinds(summary)
    write_json(out_dir / HEADLINE, write_class_metrics(summary, out_dir / group))
    n_min = summary["data"]["min_images_for_fid"]
    classes = class_table(summary, levels)
    _write_csv(classes, out_dir / f"{group}_metrics.csv")
    note = (
        f"\n{DAGGER} FID over fewer than {n_min} images on one side (evaluate.min_images_for_fid): "
        "biased and unstable.\n"
        f"Rows: the taxa of {group} (evaluate.group_level). "
        f"Real reference: real {summary['data']['real_split']} images of the same {group}. "
        "Backbones and settings: summary.json `backbones`.\n" + pairs_note(summary)
    )
    reading = sample_size_note(summary["data"])
    note += f"\n{reading}\n" if reading else ""
    fid_columns = tuple(c for c in classes.columns if c.startswith("FID"))
    write_text(out_dir / f"{group}_metrics.md", to_markdown(classes, fid_columns) + note)
    levels_df = level_table(summary, levels)
    _write_csv(levels_df, out_dir / "level_metrics.csv")
    write_text(
        out_dir / "level_metrics.md",
        to_markdown(levels_df, tuple(c for c in levels_df.columns if c.startswith("FID")))
        + "\nFID per taxon (lineage prefix at that level) with >= 2 images on both sides, averaged over taxa; "
        "accuracy and BioCLIP over all generated images (BioCLIP prompt cut at that level).\n"
        f"{DAGGER} the mean includes FIDs over fewer than {n_min} images on a side (evaluate.min_images_for_fid; "
        "how many taxa: # small-sample taxa): biased and unstable. FID floor and KID: the same per taxon, averaged "
        f"over the taxa with FID ({group}_metrics.md says what they are).\n",
    )
    rarity = rarity_table(summary, levels)
    _write_csv(rarity, out_dir / "rarity_metrics.csv")
    write_text(out_dir / "rarity_metrics.md", to_markdown(rarity) + RARITY_NOTE)
    # Bar-plot data for `dvc plots` (template bar_horizontal: x = metric column, y = the group column).
    plots = out_dir / "plots"
    per = summary["per_class"]
    names = list(classes[group_heading(summary)])
    shown = {group: [plain_text(c) for c in names]}  # dvc plots show embeds these in an inline <script>

    def bars(suffix: str, columns: dict) -> None:
        _write_csv(pd.DataFrame({**shown, **columns}), plots / f"{group}_{suffix}.csv")

    bars("fid", {f"fid_{n}": [per[c][n]["fid"] for c in names] for n in fid})
    bars("acc", {f"acc_{lv}_probe": [per[c]["probe"]["acc"][lv] for c in names] for lv in levels})
    bars("probe_dist", {"dist_probe": [per[c]["probe"]["dist"] for c in names]})
    if lp:
        bars("lpips", {f"lpips_{n}": [per[c][n]["lpips"] for c in names] for n in lp})
    if bio:
        bars("bioclip", {f"bioclip_{n}": [per[c][n]["score"] for c in names] for n in bio})
    _write_csv(pd.DataFrame({"level": levels, "acc_probe": [summary["per_level"][lv]["probe"]["acc"] for lv in levels],
                             **{f"fid_{n}": [summary["per_level"][lv][n]["fid"] for lv in levels] for n in fid}}),
               plots / "level_metrics.csv")


def _metric_row(counts: dict, entry: dict, names: list[str], scale) -> dict:
    """One row of the per-class metrics table; every file gets the same keys so that ``dvc metrics show``
    lines them up as one table (rows = files, columns = keys)."""
    row = {"images": counts["n_generated"], "species": counts["n_species"], "real_images": counts["n_real"],
           "scale": scale}
    for name in names:  # backbone sections, the numbers only (no pair counts, no descriptions)
        values = entry.get(name) or {}
        row[name] = {k: values[k] for k in ("fid", "fid_floor", "kid", "precision", "recall", "lpips", "score", "dist",
                                            "acc") if k in values}
    row["fid_small_sample"] = counts.get("fid_small_sample", False)
    return row



def write_class_metrics(summary: dict, out_dir: str | Path) -> dict:
    """``out_dir/<class>.json`` per class and ``out_dir/all.json`` (all classes pooled), the same flat keys in
    every file (``dvc metrics show metrics/class``, the folder named by evaluate.group_level, lines them up as one
    table). The folder is built under a
    temporary name and swapped in whole: no file of an earlier run (another dataset's class) survives. Returns the
    pooled row, which ``evaluate`` also writes as ``metrics/headline.json``: the one file declared as DVC metrics,
    so ``dvc exp show`` has a few metric columns instead of every class's (docs/architecture.md ``evaluate``)."""
    out_dir = Path(out_dir)
    fid, lp, bio = _kinds(summary)
    names = fid + [n for n in lp + bio if n not in fid]
    scales = summary["data"].get("generation", {}).get("scale") or []
    scale = float(scales[0]) if len(scales) == 1 else None
    with atomic_dir(out_dir) as tmp:
        files = PathNames(reserved={"all"})  # all.json is the pooled row
        per = summary["per_class"]
        for cls in sorted(per):
            row = _metric_row(per[cls], per[cls], names, scale)
            (tmp / f"{files(cls)}.json").write_text(json.dumps(row, indent=2) + "\n")
        totals = {"n_generated": summary["data"]["n_generated"], "n_real": summary["data"]["n_real"],
                  "n_species": sum(e["n_species"] for e in per.values()),
                  "fid_small_sample": summary["data"]["n_generated"] < summary["data"]["min_images_for_fid"]}
        row = _metric_row(totals, summary["overall"], names, scale)
        (tmp / "all.json").write_text(json.dumps(row, indent=2) + "\n")
    return row
