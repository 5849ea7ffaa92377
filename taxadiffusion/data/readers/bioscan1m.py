"""BIOSCAN-1M Insect metadata TSV (docs/datasets.md §1a)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from taxadiffusion.config import DatasetConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.data.readers.drops import Drops
from taxadiffusion.data.readers.fields import finish, level_map, text
from taxadiffusion.data.readers.tabular import read_delimited

# The rank columns carry the level name itself; both published file names are accepted
# (docs/datasets.md §1a: the zahrag README says "1M_", Zenodo and the file-ID map do not).
BIOSCAN_RANKS = ["phylum", "class", "order", "family", "subfamily", "tribe", "genus", "species", "subspecies"]
BIOSCAN_FILENAMES = ["BIOSCAN_Insect_Dataset_metadata.tsv", "BIOSCAN_1M_Insect_Dataset_metadata.tsv"]


def find_bioscan_metadata(metadata: str | Path) -> Path:
    """``dataset.metadata`` may be the TSV under either published name or the folder holding it."""
    path = Path(metadata)
    if path.is_dir():
        for name in BIOSCAN_FILENAMES:
            if (path / name).is_file():
                return path / name
        raise UserError(f"{path}: folder holds neither {' nor '.join(BIOSCAN_FILENAMES)} (set dataset.metadata)")
    if not path.exists() and path.name in BIOSCAN_FILENAMES:
        for name in BIOSCAN_FILENAMES:
            if (path.parent / name).is_file():
                return path.parent / name
    return path


def read_bioscan1m(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """BIOSCAN-1M ``BIOSCAN_Insect_Dataset_metadata.tsv``.

    Tab-separated without quoting (the authors' own reader uses ``QUOTE_NONE``); only the needed
    columns are converted, all as strings. Missing ranks are the literal ``not_classified``, one of
    ``dataset.na_values`` (-> NA). The image is ``<root>/part<chunk_number>/<image_file>``. Keeping only
    complete class..species lineages (``prepare.finest_required: species``, the BIOSCAN preset) should leave
    84,443 records of the real 1,128,313-row file, as in the supplement (B.2); that cannot be checked without
    the file. Unlike ``bioscan-dataset``'s loader we do not fill a missing ``genus`` from the species' first
    word, to match the paper's filter. The condition text is the ``species`` column as written
    (``train.species_text: as_written``, docs/method.md §1.2).
    """
    path = find_bioscan_metadata(cfg.metadata)
    level_cols = level_map(levels, {r: r for r in BIOSCAN_RANKS}, cfg.columns, "BIOSCAN-1M")
    raw = read_delimited(path, ["image_file", "chunk_number", *level_cols.values()], delimiter="\t", quoted=False,
                         hint=" (BIOSCAN-1M metadata TSV)")
    chunk = text(raw["chunk_number"], cfg).str.replace(r"\.0+$", "", regex=True)
    df = pd.DataFrame({"row": raw["row"]})
    df["path"] = "part" + chunk + "/" + text(raw["image_file"], cfg)
    for lv, col in level_cols.items():
        df[lv] = text(raw[col], cfg)
    return finish(df, levels, False)
