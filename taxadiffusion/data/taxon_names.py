"""Taxon names before anything counts (``prepare`` step 2; docs/datasets.md §3b-§3d).

1. One canonical text per name (:func:`canonical_name`): invisible and bidi characters removed (they come with
   copy-paste from web pages and PDFs and make ``Gotium\\u200b caféa`` a second species that looks like the
   first), Unicode NFC (``é`` as one code point or as ``e`` + a combining accent), whitespace collapsed and
   stripped.
2. Capitalisation: ranks start with a capital, a species is ``Genus epithet`` (:func:`rank_name`,
   :func:`species_name`); a bare epithet becomes a binomial with the row's genus.
3. Spellings of one level that still differ only by case (``GOTIUM`` and ``Gotium``) are merged into the
   most frequent one (ties: fewer capitals, then code-point order), listed in ``report.json`` ``case_variants``.
4. ``dataset.synonyms``.

Every row a rule changes is counted under that rule (``report.json`` ``normalised``; a row counts once per
rule, under every rule that changed one of its names). :func:`placeholder_species` then finds species that
are no species (``Gotium sp.``, ``Gotium cf. x``, a species equal to its genus), and
:func:`check_inverted_levels` stops a ``levels`` list written fine -> coarse that the rank names cannot catch.
"""

from __future__ import annotations

import logging
import re
import unicodedata

import numpy as np
import pandas as pd

from taxadiffusion.config import RANK_ORDER
from taxadiffusion.core.errors import UserError

log = logging.getLogger(__name__)

# zero-width space / non-joiner / joiner, word joiner, BOM, left-to-right / right-to-left marks, bidi embeddings,
# overrides and isolates, soft hyphen: none of them is visible, all of them make a different string
INVISIBLE = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_WS = re.compile(r"\s+")
NORMALISED = ("invisible_chars", "unicode_nfc", "whitespace", "capitalisation", "binomial", "case_merged",
              "synonyms")
_BIT = {rule: 1 << i for i, rule in enumerate(NORMALISED)}
CASE_RULE = "merged into the most frequent spelling (ties: fewer capitals, then code-point order)"
# A child level is "inverted" below its parent when most of its taxa have several parents; a few such taxa are
# placement errors (counted as inconsistent_lineage), so at least this many are needed before saying so.
_INVERTED_MIN_TAXA = 3


def _is_missing(name) -> bool:
    return name is None or name is pd.NA or (isinstance(name, float) and np.isnan(name))


def _canonical(name) -> tuple[str | None, int]:
    """(canonical text or None, the rule bits that changed it): invisible characters, NFC, whitespace."""
    if _is_missing(name):
        return None, 0
    raw = str(name)
    visible = INVISIBLE.sub("", raw)
    nfc = unicodedata.normalize("NFC", visible)
    out = _WS.sub(" ", nfc).strip()
    bits = ((visible != raw) * _BIT["invisible_chars"] | (nfc != visible) * _BIT["unicode_nfc"]
            | (out != nfc) * _BIT["whitespace"])
    return out or None, bits


def canonical_name(name) -> str | None:
    """The canonical text of a name (module docstring, 1.); empty -> None."""
    return _canonical(name)[0]


def _rank_case(name: str | None) -> str | None:
    # only the first letter: names such as ``Perciformes/Scorpaenoidei`` keep their case
    return name[0].upper() + name[1:] if name and name[0].islower() else name


def _species_case(name: str | None) -> str | None:
    if not name:
        return name
    parts = name.split(" ")
    parts[0] = parts[0][0].upper() + parts[0][1:]
    if len(parts) > 1 and parts[1].replace("-", "").isalpha():
        parts[1] = parts[1].lower()
    return " ".join(parts)


def rank_name(name) -> str | None:
    """Ranks above species: canonical, capitalised first letter (FishNet-style ``perciformes`` -> ``Perciformes``)."""
    return _rank_case(canonical_name(name))


def species_name(name) -> str | None:
    """Binomial ``Genus epithet``: canonical, genus capitalised, an alphabetic epithet in lower case."""
    return _species_case(canonical_name(name))


def map_unique(s: pd.Series, fn) -> tuple[pd.Series, np.ndarray]:
    """``fn(value) -> (new value, rule bits)`` once per distinct value (BIOSCAN: ~1M rows, few thousand names);
    the new column and each row's bits."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    done = [fn(u) for u in uniques] + [(None, 0)]  # code -1 (a missing value) picks the last entry
    values = np.array([d[0] for d in done], dtype=object)
    bits = np.array([d[1] for d in done], dtype=np.int64)
    return pd.Series(values[codes], index=s.index, dtype="string"), bits[codes]


def _with_case(case):
    def step(name):
        canon, bits = _canonical(name)
        out = case(canon)
        return out, bits | (out != canon) * _BIT["capitalisation"]
    return step


def _species_step(name) -> tuple[str | None, int]:
    if _is_missing(name):
        return None, 0
    out = _species_case(name)
    return out, (out != name) * _BIT["capitalisation"]


def _merge_case_variants(col: pd.Series, max_examples: int) -> tuple[pd.Series, np.ndarray, dict | None]:
    """Spellings that differ only by case -> the most frequent one (ties: fewer capitals, then code-point order)."""
    counts = col.value_counts(dropna=True)
    groups = pd.Series(counts.index, index=counts.index).groupby(counts.index.str.lower(), sort=True)
    mapping, variants = {}, []
    for _key, spellings in groups:
        if len(spellings) < 2:
            continue
        kept = min(spellings, key=lambda s: (-counts[s], sum(c.isupper() for c in s), s))
        merged = {s: int(counts[s]) for s in sorted(spellings) if s != kept}
        mapping.update(dict.fromkeys(merged, kept))
        variants.append({"kept": kept, "rows": int(counts[kept]), "merged": merged})
    touched = col.isin(list(mapping)).fillna(False).to_numpy(dtype=bool)
    if not mapping:
        return col, touched, None
    variants.sort(key=lambda v: (-sum(v["merged"].values()), v["kept"]))
    return col.replace(mapping), touched, {"rule": CASE_RULE, "groups": len(variants),
                                           "examples": variants[:max_examples]}


def _bare_epithets(df: pd.DataFrame) -> np.ndarray:
    # A bare lower-case epithet ("obtusa") becomes a binomial with the row's genus: the contract's species is
    # "Genus epithet" (iNat-style tables give the epithet alone).
    sp = df["species"]
    bare = sp.notna() & df["genus"].notna() & ~sp.str.contains(" ", regex=False) & sp.str.slice(0, 1).str.islower()
    return bare.fillna(False).to_numpy(dtype=bool)


def _apply_synonyms(df: pd.DataFrame, levels: list[str], synonyms: dict) -> np.ndarray:
    changed = np.zeros(len(df), dtype=bool)
    for lv, mapping in (synonyms or {}).items():
        if lv not in levels:
            log.warning("prepare: dataset.synonyms.%s ignored (not in params.levels %s)", lv, levels)
            continue
        if not isinstance(mapping, dict):
            raise UserError(f"params.yaml: dataset.synonyms.{lv} must map names to names, got {mapping!r}")
        norm = species_name if lv == "species" else rank_name
        table = {norm(k): norm(v) for k, v in mapping.items()}
        before = df[lv]
        df[lv] = before.replace(table)
        changed |= (before != df[lv]).fillna(False).to_numpy(dtype=bool)
    return changed


def normalise_names(df: pd.DataFrame, levels: list[str], synonyms: dict, max_examples: int = 20
                    ) -> tuple[pd.DataFrame, dict]:
    """The module docstring's steps on every level column; ``(df, {"normalised": {rule: rows},
    "case_variants": {level: {"groups", "examples"}}})``."""
    bits = np.zeros(len(df), dtype=np.int64)
    for lv in levels:
        # species: canonical text only until the bare epithets are joined (their first letter tells them apart)
        df[lv], b = map_unique(df[lv], _with_case(_rank_case if lv != "species" else (lambda s: s)))
        bits |= b
    if "species" in levels:
        if "genus" in levels:
            bare = _bare_epithets(df)
            df.loc[bare, "species"] = df.loc[bare, "genus"] + " " + df.loc[bare, "species"]
            bits |= bare * _BIT["binomial"]
        df["species"], b = map_unique(df["species"], _species_step)
        bits |= b
    variants = {}
    for lv in levels:
        df[lv], touched, found = _merge_case_variants(df[lv], max_examples)
        bits |= touched * _BIT["case_merged"]
        if found:
            variants[lv] = found
    bits |= _apply_synonyms(df, levels, synonyms) * _BIT["synonyms"]
    counts = {rule: int(np.count_nonzero(bits & bit)) for rule, bit in _BIT.items()}
    return df, {"normalised": counts, "case_variants": variants}


# --------------------------------------------------------------------------------------------------
# Names that are no species, levels in the wrong order


def placeholder_species(df: pd.DataFrame, levels: list[str], words: list[str]) -> pd.Series:
    """Per row, why its species is a placeholder (``None``: a species): a word of ``prepare.placeholder_words``
    after the genus (``Gotium sp.``, ``Gotium cf. bameutisensis``, ``Gotium ?``; compared without a final
    ``.`` and case), or a species equal to its genus (``Gotium``)."""
    if "species" not in levels:
        return pd.Series(None, index=df.index, dtype=object)
    keys = {w.rstrip(".").lower() for w in words}

    def reason(name):
        if _is_missing(name):
            return None, 0
        hit = next((w for w in str(name).split(" ")[1:] if w.rstrip(".").lower() in keys), None)
        return (None if hit is None else f"species {name!r}: placeholder word {hit!r}"), 0

    found, _ = map_unique(df["species"], reason)
    out = found.astype(object).where(found.notna(), None)
    if "genus" in levels:
        same = (df["species"] == df["genus"]).fillna(False).to_numpy(dtype=bool) & out.isna().to_numpy()
        out.loc[same] = "species " + df.loc[same, "species"].map(repr).astype(object) + " equals its genus"
    return out


def check_inverted_levels(df: pd.DataFrame, levels: list[str], where: str) -> None:
    """A ``levels`` list written fine -> coarse that :data:`RANK_ORDER` cannot check (names it does not know):
    one-line error when most taxa of a level have several parents at the level listed above it (a taxon has one
    parent; the other way round, a genus has several species)."""
    known = {r.lower() for r in RANK_ORDER}
    for parent, child in zip(levels, levels[1:]):
        if parent.lower() in known and child.lower() in known:
            continue  # params.yaml `levels` is checked against the rank order by name (config/params.py)
        pairs = df[[parent, child]].dropna().drop_duplicates()
        parents = pairs.groupby(child, observed=True).size()
        several = int((parents > 1).sum())
        if several >= _INVERTED_MIN_TAXA and 2 * several > len(parents):
            raise UserError(
                f"params.yaml levels: {several} of {len(parents)} '{child}' taxa in {where} have several "
                f"'{parent}' parents, but a taxon has one parent: the levels look inverted ('{child}' coarser than "
                f"'{parent}'); list levels coarse -> fine")
