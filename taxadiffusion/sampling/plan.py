"""The generation plan: which taxa to draw and how many images each (supplement Table S2).

Rule (docs/method.md §5 "Images per taxon", [SUPP Table S2]): per class, classes with *more than*
``max_species_per_class`` taxa of the target level draw a seeded sample of that many taxa with
``images_per_species_capped`` images each (paper: 400 x 15); the other classes draw all their taxa with
``images_per_species`` images each (paper: 50). Taxa come from the TEST split of the prepared table.

A taxon is a lineage prefix down to the target level (cut_off ``k``); levels below it are the literal
``"None"``, as in the official generation loop (docs/method.md §3). Image ``i`` of a taxon has a seed that
is a stable hash of (params.yaml ``seed``, lineage, i), so its pixels do not depend on batching or on which
process draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from taxadiffusion.config import GenerateConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.lineage import NONE, SEED_MODULUS, image_seed, lineage_key, stable_int
from taxadiffusion.core.names import TreeNames


def read_table(prepared_dir: str | Path, levels: list[str]) -> pd.DataFrame:
    """``<prepared>/table.parquet`` (docs/architecture.md ``prepare``), checked: readable, with the level columns
    and ``split``."""
    path = Path(prepared_dir) / "table.parquet"
    if not path.exists():
        raise UserError(f"{path}: not found (run the prepare stage first: dvc repro prepare)")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None
    missing = [c for c in [*levels, "split"] if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing} (levels come from params.yaml 'levels')")
    return table


def read_test_table(prepared_dir: str | Path, levels: list[str]) -> pd.DataFrame:
    """The test rows of ``<prepared>/table.parquet``, checked."""
    path = Path(prepared_dir) / "table.parquet"
    table = read_table(prepared_dir, levels)
    test = table[table["split"] == "test"]
    if test.empty:
        raise UserError(f"{path}: no rows with split == 'test' (check prepare.test_fraction)")
    return test


@dataclass(frozen=True)
class PlanRule:
    """The Table S2 rule (module docstring): the target level, and how many images per taxon."""

    target_level: str
    max_per_class: int  # generate.max_species_per_class (paper: 400)
    n_capped: int  # generate.images_per_species_capped (paper: 15)
    n_other: int  # generate.images_per_species (paper: 50)

    @classmethod
    def of(cls, cfg: GenerateConfig) -> "PlanRule":
        return cls(cfg.target_level, cfg.max_species_per_class, cfg.images_per_species_capped,
                   cfg.images_per_species)


def make_plan(test: pd.DataFrame, levels: list[str], rule: PlanRule, seed: int,
              where: str = "table.parquet") -> pd.DataFrame:
    """One row per taxon: level columns (``"None"`` below the target), ``n_images``, ``capped``."""
    target_level, max_per_class, n_capped, n_other = rule.target_level, rule.max_per_class, rule.n_capped, rule.n_other
    if target_level not in levels:
        raise UserError(f"generate.target_level={target_level!r}: expected one of {levels}")
    if max_per_class < 1 or n_capped < 1 or n_other < 1:
        raise UserError("generate.max_species_per_class, images_per_species(_capped) must be >= 1")
    k = levels.index(target_level)
    names = levels[: k + 1]
    for lv in names:
        bad = test[lv].isna() | (test[lv].astype(str).str.strip() == "")
        if bad.any():
            row = test.loc[bad, "row"].iloc[0] if "row" in test.columns else test.index[bad][0]
            raise UserError(f"{where}: row {row}: field '{lv}' is empty (prepare's test split holds complete "
                            "lineages only; re-run prepare)")
    taxa = test[names].astype(str).drop_duplicates()
    rows = []
    for cls, group in sorted(taxa.groupby(levels[0], sort=False), key=lambda kv: kv[0]):
        lineages = sorted(tuple(r) for r in group.itertuples(index=False))
        capped = len(lineages) > max_per_class
        if capped:
            # sorted, then a seeded choice: the selection depends on (seed, class) only
            rng = np.random.default_rng([int(seed), stable_int("plan", cls) % SEED_MODULUS])
            pick = np.sort(rng.choice(len(lineages), size=max_per_class, replace=False))
            lineages = [lineages[i] for i in pick]
        for lin in lineages:
            rows.append([*lin, *([NONE] * (len(levels) - k - 1)), n_capped if capped else n_other, capped])
    return pd.DataFrame(rows, columns=[*levels, "n_images", "capped"])


def taxon_dirs(plan: pd.DataFrame, levels: list[str], target_level: str) -> list[str]:
    """Relative image folder per plan row: ``<class>/<target-level name>``, by the one name-to-path rule
    (``core/names.py``): injective per folder, also case-insensitively, bounded length, no leading dots.

    Two taxa of a class with the same target-level name (homonyms under different parents) get two folders:
    the second one is made unique from its whole lineage.
    """
    k = levels.index(target_level)
    tree = TreeNames()
    out: list[str] = []
    given: set[str] = set()
    for row in plan[levels[: k + 1]].itertuples(index=False):
        cls, name = row[0], row[k]
        rel = tree(cls, name)
        if rel in given:  # the same (class, name) twice: a homonym; key it by its lineage instead
            rel = tree(cls, "/".join(str(n) for n in row))
        given.add(rel)
        out.append(rel)
    return out


def plan_images(plan: pd.DataFrame, levels: list[str], target_level: str, seed: int) -> pd.DataFrame:
    """Expand the plan to one row per image: level columns, taxon, index, path, seed (manifest order)."""
    k = levels.index(target_level)
    dirs = taxon_dirs(plan, levels, target_level)
    rows = []
    for taxon, (row, rel) in enumerate(zip(plan.itertuples(index=False), dirs)):
        names = list(row[: len(levels)])
        key = lineage_key(names[: k + 1])
        for i in range(int(row[len(levels)])):
            rows.append([*names, taxon, i, f"{rel}/{i:04d}.png", image_seed(seed, key, i)])
    return pd.DataFrame(rows, columns=[*levels, "taxon", "index", "path", "seed"])
