"""``prepare``: annotation file -> ``data/prepared/{table.parquet, taxonomy.json, report.json}``.

Steps (each skipped row is counted under one reason, the first that applies, in this order):

1. read the dataset (:mod:`taxadiffusion.data.readers`; ``dataset.na_values`` such as ``NA`` are missing ranks;
   reader-specific reasons such as ``unknown_category_id``, or ``image_url`` for a ``table`` image given as a URL),
2. normalise names (:mod:`taxadiffusion.data.taxon_names`: one canonical text, capitalisation, binomials, spellings
   that differ only by case merged, ``dataset.synonyms``; every changed row counted in ``report.json``
   ``normalised``); a placeholder species (``Gotium sp.``, ``Gotium`` as its own species;
   ``prepare.placeholder_words``) becomes a missing species; a ``levels`` list the data shows to be inverted
   is a one-line error,
3. ``missing_<level>``: keep lineages named down to ``prepare.finest_required`` (coarse first); a finer
   level may be missing (a *partial lineage*, trained with ``"<level>: None"``, docs/method.md §2) unless a
   level below it is named (a gap); a placeholder species where a species is needed is
   ``placeholder_species``; ``missing_path`` for a row that names no image,
4. ``path_escapes_root``: the image path must stay inside ``dataset.images`` (checked on the text
   of the path, so it also holds with ``check_images: none`` and never touches the disk),
5. ``duplicate``: the same path with the same lineage again; ``conflicting_lineage``: one image
   labelled with different lineages (all its rows: neither label can be trusted),
6. ``inconsistent_lineage``: a species (the finest level) seen under several lineages keeps its most
   frequent one, so ``taxonomy.json`` holds every species once; a homonym (the same name under lineages
   that share no ancestor, :func:`_same_taxon_groups`) is two taxa and keeps both (complete lineages only),
7. image checks (``prepare.check_images``): ``missing_image``, ``corrupt_image``, ``nonfinite_pixels`` (a float
   image with NaN / infinite pixels, ``decode`` only), ``invalid_bbox``.
   ``none`` skips the existence and decode checks (for huge tables whose images live elsewhere).

Then a per-species train/test split of the complete lineages (see :func:`split_per_species`); partial
lineages go to train, so the test split, ``taxonomy.json``, the generation plan and the per-species metrics
hold complete lineages only. A class (first level) with complete lineages but no test image (each of its
species has a single image) is a one-line error: evaluate could not score it. Species and the taxa of every
level are keyed on their full lineage (split, ``taxonomy.json``, ``report.json`` ``taxa``), never on a name alone.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from taxadiffusion.config import DatasetConfig, PrepareConfig
from taxadiffusion.core import files
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.image_files import bbox_box, check_image
from taxadiffusion.data.readers import BBOX_COLUMNS, Drops, read_dataset
from taxadiffusion.data.taxon_names import check_inverted_levels, map_unique, normalise_names, placeholder_species

RESERVED_COLUMNS = {"path", "split", "row", *BBOX_COLUMNS}
_INF = float("inf")


# --------------------------------------------------------------------------------------------------
# Filters


def _path_inside_root(path: str) -> str | None:
    """Normalised relative POSIX path, or None when it is absolute or climbs out of the root.

    Purely lexical (no ``realpath``): symlinks inside the root that point elsewhere are a legitimate
    way to lay out a dataset, and this check must also run when no image is on this machine.
    """
    p = path.replace("\\", "/")
    if p.startswith("/") or re.match(r"^[A-Za-z]:", p):
        return None
    norm = posixpath.normpath(p)
    if norm == ".." or norm.startswith("../") or norm in (".", ""):
        return None
    return norm


def _drop(df: pd.DataFrame, mask, reason: str, drops: Drops, detail: pd.Series | None = None) -> pd.DataFrame:
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        drops.add(reason, df[mask], None if detail is None else detail[mask])
    return df[~mask]


def _same_taxon_groups(counts: pd.DataFrame, levels: list[str]) -> np.ndarray:
    """A group id per distinct lineage (row of ``counts``): one group per taxon of the finest level.

    Lineages of one finest name are one taxon, placed inconsistently, when they share an ancestor at some
    rank, other than one the name itself spells out (the genus of a binomial); they are homonyms, two
    taxa, when they share none: *Morus* the gannet (Animalia > ... > Sulidae) and *Morus* the mulberry
    (Plantae > ... > Moraceae).
    """
    finest = levels[-1]
    group = np.arange(len(counts))
    shared = np.flatnonzero(counts.duplicated(finest, keep=False).to_numpy())
    if not len(shared):
        return group
    sub = counts.iloc[shared].reset_index(drop=True)
    root = list(range(len(sub)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    names = sub[finest].astype(str).tolist()
    for lv in levels[:-1]:
        values = sub[lv].astype(str).tolist()
        evidence = np.array([not (v == n or n.startswith(v + " ")) for v, n in zip(values, names)], dtype=bool)
        rows = np.flatnonzero(evidence)  # an ancestor the name spells out (its genus) is no evidence
        for members in sub.iloc[rows].groupby([finest, lv], sort=False, observed=True).indices.values():
            for other in rows[members[1:]]:
                root[find(other)] = find(rows[members[0]])
    group[shared] = shared[[find(i) for i in range(len(sub))]]
    return group


def _keep_majority_lineage(df: pd.DataFrame, levels: list[str], drops: Drops) -> pd.DataFrame:
    """A taxon of the finest level seen under several lineages keeps its most frequent one (homonyms: both)."""
    if len(levels) < 2:
        return df
    counts = df.groupby(levels, sort=True, observed=True).size().rename("_n").reset_index()
    counts["_g"] = _same_taxon_groups(counts, levels)
    # most rows first; ties broken by the sorted lineage so the choice is deterministic
    counts = counts.sort_values(["_n", *levels], ascending=[False] + [True] * len(levels), kind="stable")
    best = counts.drop_duplicates("_g")
    if len(best) == len(counts):
        return df
    kept = {g: "kept lineage: " + " > ".join(lin)
            for g, lin in zip(best["_g"], best[levels].astype(str).values.tolist())}
    counts["_best"] = counts.index.isin(best.index)
    merged = df[levels].merge(counts[[*levels, "_g", "_best"]], on=levels, how="left")
    bad = ~merged["_best"].to_numpy(dtype=bool)
    detail = pd.Series(merged["_g"].map(kept).to_numpy(), index=df.index)
    return _drop(df, bad, "inconsistent_lineage", drops, detail)


def lineage_counts(table: pd.DataFrame, levels: list[str]) -> dict[str, int]:
    """Distinct taxa per level, counted by lineage (a homonym genus under two families counts twice); a
    partial lineage counts at the levels it names."""
    return {lv: int(len(table[levels[: k + 1]].dropna().drop_duplicates())) for k, lv in enumerate(levels)}


def named_depth(table: pd.DataFrame, levels: list[str]) -> np.ndarray:
    """Per row, how many levels from the coarsest on are named (``len(levels)``: a complete lineage)."""
    return table[levels].notna().to_numpy().cumprod(axis=1).sum(axis=1)


def partial_rows(table: pd.DataFrame, levels: list[str]) -> dict[str, int]:
    """Kept partial lineages per finest named level, coarse to fine (``report.json`` ``partial_rows``)."""
    depth = named_depth(table, levels)
    return {lv: int((depth == k + 1).sum()) for k, lv in enumerate(levels[:-1]) if (depth == k + 1).any()}


def _check_images(df: pd.DataFrame, root: Path, mode: str, show_progress: bool) -> tuple[list, list, list]:
    paths = [root / p for p in df["path"].tolist()]
    need = _has_bbox(df).tolist()
    workers = min(32, 4 * (os.cpu_count() or 2))  # I/O bound: more threads than cores
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(tqdm(pool.map(lambda a: check_image(a[0], mode, a[1]), zip(paths, need)), total=len(paths),
                            desc=f"prepare: check images ({mode})", unit="img", disable=not show_progress))
    status = [r[0] for r in results]
    sizes = [r[1] for r in results]
    errors = [r[2] for r in results]
    return status, sizes, errors


def _has_bbox(df: pd.DataFrame) -> np.ndarray:
    if not set(BBOX_COLUMNS) <= set(df.columns):
        return np.zeros(len(df), dtype=bool)
    return ~np.isnan(df[BBOX_COLUMNS].to_numpy(dtype=float)).all(axis=1)


def _bbox_problems(df: pd.DataFrame, sizes: list | None) -> np.ndarray:
    """True where a bbox is given but unusable (partly missing, non-positive, or outside the image)."""
    given = _has_bbox(df)
    bad = np.zeros(len(df), dtype=bool)
    if not given.any():
        return bad
    vals = df[BBOX_COLUMNS].to_numpy(dtype=float)
    for i in np.flatnonzero(given):
        size = sizes[i] if sizes is not None else None
        bad[i] = bbox_box(vals[i], size or (_INF, _INF)) is None
    return bad


# --------------------------------------------------------------------------------------------------
# Split


def _row_hash(paths: pd.Series, seed: int) -> np.ndarray:
    key = hashlib.sha256(f"taxadiffusion-split-{seed}".encode()).hexdigest()[:16]
    return pd.util.hash_pandas_object(paths.astype(str), index=False, hash_key=key).to_numpy()


def split_per_species(df: pd.DataFrame, species: str | list[str], seed: int, test_fraction: float
                      ) -> tuple[pd.Series, int]:
    """``train``/``test`` per row, split within each species.

    ``species`` is the species column, or the level columns: then a species is a full lineage, so two
    homonyms are two species. A species with one image stays in train (counted); with n >= 2 images,
    ``round(n * test_fraction)`` clipped to [1, n - 1] go to test, so every test species is also seen in
    training (needed for per-species FID and the probe). Which rows go to test depends only on the seed
    and each row's path, so adding images of one species does not reshuffle the others.
    """
    key = df[species] if isinstance(species, str) else df.groupby(list(species), sort=False, observed=True).ngroup()
    n = key.groupby(key).transform("size").to_numpy()
    order = pd.Series(_row_hash(df["path"], seed), index=df.index)
    rank = order.groupby(key).rank(method="first").to_numpy()
    if test_fraction > 0:
        n_test = np.clip(np.rint(n * test_fraction), 1, np.maximum(n - 1, 0))
    else:
        n_test = np.zeros_like(n)
    split = np.where(rank <= n_test, "test", "train")
    return pd.Series(split, index=df.index, dtype="string"), int((n == 1).sum())


# --------------------------------------------------------------------------------------------------
# The stage


def _filter_rows(df: pd.DataFrame, levels: list[str], finest: int, drops: Drops, placeholder: pd.Series
                 ) -> pd.DataFrame:
    """Steps 3-6 of the module docstring: lineages named down to ``levels[finest]``, safe paths, one lineage
    per image and taxon. ``placeholder``: why a row's species (set missing) was a placeholder, else None."""
    for i, lv in enumerate(levels):
        # below the required levels a name may be missing, unless a finer one is named (a gap)
        gap = df[levels[i + 1:]].notna().any(axis=1).to_numpy() if i > finest else True
        gone = df[lv].isna().to_numpy() & gap
        if lv == "species":  # a placeholder species where a species is needed: its own reason, not "missing"
            why = placeholder.loc[df.index]
            named = gone & why.notna().to_numpy()
            df, gone = _drop(df, named, "placeholder_species", drops, why), gone[~named]
        df = _drop(df, gone, f"missing_{lv}", drops)
    df = _drop(df, df["path"].isna(), "missing_path", drops)

    inside, _ = map_unique(df["path"], lambda p: (_path_inside_root(p), 0))
    df = _drop(df, inside.isna(), "path_escapes_root", drops)
    df["path"] = inside[inside.notna()]

    df = _drop(df, df.duplicated(["path", *levels], keep="first"), "duplicate", drops)
    conflict = df.duplicated("path", keep=False)
    df = _drop(df, conflict, "conflicting_lineage", drops)
    complete = df[levels].notna().all(axis=1)
    if complete.all():
        return _keep_majority_lineage(df, levels, drops)
    return pd.concat([_keep_majority_lineage(df[complete], levels, drops), df[~complete]]).sort_index()


def _filter_images(df: pd.DataFrame, root: Path, mode: str, drops: Drops, show_progress: bool) -> pd.DataFrame:
    """Step 7: ``missing_image``, ``corrupt_image``, ``nonfinite_pixels`` (unless ``mode`` is ``none``),
    ``invalid_bbox``."""
    sizes = None
    if mode != "none" and len(df):
        if not root.is_dir():
            raise UserError(f"{root}: image folder not found (set dataset.images, or prepare.check_images: none)")
        status, sizes, errors = _check_images(df, root, mode, show_progress)
        status = np.array(status, dtype=object)
        err = pd.Series(errors, index=df.index, dtype=object)
        missing, corrupt, nonfinite = status == "missing", status == "corrupt", status == "nonfinite"
        drops.add("missing_image", df[missing])
        drops.add("corrupt_image", df[corrupt], err[corrupt])
        drops.add("nonfinite_pixels", df[nonfinite], err[nonfinite])
        unusable = missing | corrupt | nonfinite
        sizes = [s for s, bad in zip(sizes, unusable) if not bad]
        df = df[~unusable]
    return _drop(df, _bbox_problems(df, sizes), "invalid_bbox", drops)


def _final_table(df: pd.DataFrame, levels: list[str], pcfg: PrepareConfig, where: str) -> tuple[pd.DataFrame, int]:
    """The contract's columns in file order, with the split; (table, single-image species).

    Only complete lineages are split; partial ones train only (docs/method.md §2)."""
    df = df.reset_index(drop=True)
    complete = named_depth(df, levels) == len(levels)
    split, single = split_per_species(df[complete], levels, pcfg.seed, pcfg.test_fraction)
    df["split"] = pd.Series("train", index=df.index, dtype="string")
    df.loc[split.index, "split"] = split
    _check_every_class_tested(df[complete], levels[0], pcfg.test_fraction, where)
    cols = ["path", *levels, "split", "row"] + [c for c in BBOX_COLUMNS if c in df.columns]
    table = df[cols].copy()
    table["row"] = table["row"].astype("int64")
    if "bbox_x" in table.columns and table[BBOX_COLUMNS].isna().all(axis=None):
        table = table.drop(columns=BBOX_COLUMNS)
    return table, single


def _check_every_class_tested(complete: pd.DataFrame, first: str, test_fraction: float, where: str) -> None:
    """Every class (first level) with a complete lineage is evaluated, against its test images: one-line error
    when it has none (only possible when each of its species has a single image, which trains only)."""
    untested = sorted(set(complete[first]) - set(complete.loc[complete["split"] == "test", first]))
    if not untested:
        return
    rows = complete[complete[first] == untested[0]]
    more = f" (and {len(untested) - 1} more: {', '.join(untested[1:4])})" if len(untested) > 1 else ""
    raise UserError(f"{where}: {first} {untested[0]!r}{more} has no test image, so evaluate cannot score it: its "
                    f"{len(rows)} image(s) of complete lineage are {len(rows)} species with one image each, and a "
                    f"one-image species stays in train whatever prepare.test_fraction={test_fraction:g} is; add a "
                    f"second image of one of its species, or leave the {first} out of the annotation file")


def _read_normalised(cfg: DatasetConfig, pcfg: PrepareConfig, levels: list[str]
                     ) -> tuple[pd.DataFrame, Drops, pd.Series, dict]:
    """Steps 1-2: the dataset with canonical names, placeholder species set missing (``placeholder`` says why),
    and what normalisation did (``report.json`` ``normalised``, ``case_variants``, ``placeholder_species``)."""
    df, drops = read_dataset(cfg, levels, pcfg.max_examples)
    df, names = normalise_names(df, levels, cfg.synonyms, pcfg.max_examples)
    placeholder = placeholder_species(df, levels, pcfg.placeholder_words)
    found = placeholder.notna().to_numpy()
    spelled = df.loc[found, "species"].value_counts().head(pcfg.max_examples) if found.any() else {}
    names["placeholder_species"] = {"words": list(pcfg.placeholder_words), "rows": int(found.sum()),
                                    "names": {k: int(v) for k, v in spelled.items()}}
    if found.any():
        df.loc[found, "species"] = pd.NA
    check_inverted_levels(df, levels, str(cfg.metadata))
    return df, drops, placeholder, names


def _check_levels(pcfg: PrepareConfig, levels: list[str]) -> None:
    clash = sorted(set(levels) & RESERVED_COLUMNS)
    if clash:
        raise UserError(f"params.yaml: level name(s) {clash} clash with table columns {sorted(RESERVED_COLUMNS)}")
    if pcfg.finest_required not in levels:
        raise UserError(f"params.yaml prepare.finest_required={pcfg.finest_required!r}: expected one of {levels}")


def table_without_images(cfg: DatasetConfig, pcfg: PrepareConfig, levels: list[str]) -> pd.DataFrame:
    """Steps 1-6 and the split without opening an image: the table ``prepare`` would write if every image were
    readable (stage ``preflight`` reads it before anything runs). The image checks only drop rows, so a class
    without a test image here has none after them either: the same one-line error, minutes earlier."""
    _check_levels(pcfg, levels)
    df, drops, placeholder, _ = _read_normalised(cfg, pcfg, levels)
    df = _filter_rows(df, levels, levels.index(pcfg.finest_required), drops, placeholder)
    if not len(df):
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(drops.counts.items()))
        raise UserError(f"{cfg.metadata}: no usable rows: all {drops.total} were dropped ({reasons})")
    return _final_table(df, levels, pcfg, str(cfg.metadata))[0]


def prepare(cfg: DatasetConfig, pcfg: PrepareConfig, levels: list[str], out: str | Path,
            show_progress: bool = True) -> dict:
    """Read, filter, check, split; write the three ``data/prepared`` files; return the report."""
    _check_levels(pcfg, levels)
    out = Path(out)

    df, drops, placeholder, names = _read_normalised(cfg, pcfg, levels)
    rows_in = len(df) + drops.total
    df = _filter_rows(df, levels, levels.index(pcfg.finest_required), drops, placeholder)
    df = _filter_images(df, Path(cfg.images), pcfg.check_images, drops, show_progress)
    names["placeholder_species"]["kept_as_partial_lineage"] = int(placeholder.loc[df.index].notna().sum())

    report = {
        "dataset": cfg.name, "metadata": str(cfg.metadata), "images": str(cfg.images),
        "check_images": pcfg.check_images, "levels": levels, "finest_required": pcfg.finest_required,
        "rows_in": int(rows_in), "rows_kept": len(df),
        "dropped": dict(sorted(drops.counts.items())),
        "examples": {k: drops.examples[k] for k in sorted(drops.examples)},
        **names,
    }
    assert report["rows_in"] == report["rows_kept"] + sum(report["dropped"].values()), report["dropped"]
    if not len(df):
        files.write_json(out / "report.json", report)
        reasons = ", ".join(f"{k}: {v}" for k, v in report["dropped"].items())
        raise UserError(f"{cfg.metadata}: no usable rows: all {rows_in} were dropped ({reasons}); "
                        f"see {out / 'report.json'}")

    table, single = _final_table(df, levels, pcfg, str(cfg.metadata))
    lineages = table[levels].dropna().drop_duplicates().sort_values(levels).astype(str).values.tolist()
    taxa = lineage_counts(table, levels)
    report["partial_rows"] = partial_rows(table, levels)  # kept, per finest named level; train split only
    report["splits"] = {s: int((table["split"] == s).sum()) for s in ("train", "test")}
    report["species"] = {"total": taxa[levels[-1]], "train_only_single_image": single}
    report["taxa"] = taxa

    with files.staged_outputs(out) as staging:  # the three outputs together, or none of them
        table.to_parquet(staging / "table.parquet", index=False)
        files.write_json(staging / "taxonomy.json", {"levels": levels, "lineages": lineages})
        files.write_json(staging / "report.json", report)
    return report
