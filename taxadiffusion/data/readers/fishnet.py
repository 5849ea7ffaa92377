"""FishNet CSV (``anns/train.csv`` / ``test.csv``; docs/method.md §4, docs/datasets.md §1b)."""

from __future__ import annotations

import pandas as pd

from taxadiffusion.config import DatasetConfig
from taxadiffusion.data.readers.drops import Drops
from taxadiffusion.data.readers.fields import attach_bbox, basename, finish, image_id, level_map, load_bbox_json, text
from taxadiffusion.data.readers.tabular import read_delimited

# level -> CSV column (`species` is the binomial and is lower-case in the header).
FISHNET_COLUMNS = {
    "superclass": "SuperClass",
    "class": "Class",
    "order": "Order",
    "family": "Family",
    "subfamily": "Subfamily",
    "genus": "Genus",
    "species": "species",
}
FISHNET_HEADER = (
    ",Unnamed: 0,species,image,SpecCode,Genus,Subfamily,Family,Order,Class,SuperClass,source,Folder,Troph,"
    "FeedingPath,Tropical,Temperate,Subtropical,Boreal,Polar,freshwater,saltwater,brackish,NewOrder,Frequency"
).split(",")


def read_fishnet(cfg: DatasetConfig, levels: list[str], drops: Drops) -> pd.DataFrame:
    """FishNet CSV.

    Image path ``<Folder>/<basename(image)>`` (``image`` is a fishbase URL or a bare ``<uuid>.jpg``; only its
    file name is used, so a URL here is expected and never downloaded); ``species`` is empty on
    ``source=inat`` rows (``prepare`` keeps them as partial lineages with ``prepare.finest_required`` above
    species, as the official loader and the FishNet preset, else counts them as ``missing_species``);
    the condition text is the ``species`` column as written (``train.species_text: as_written``, docs/method.md
    §1.2); ``Actinopteri``/``Actinopterygii``
    are unified by ``dataset.synonyms`` in ``prepare``; names such as ``Perciformes/Scorpaenoidei`` are kept
    verbatim.
    """
    level_cols = level_map(levels, FISHNET_COLUMNS, cfg.columns, "FishNet")
    raw = read_delimited(cfg.metadata, ["image", "Folder", *level_cols.values()], delimiter=",",
                         hint=" (FishNet CSV header: ,Unnamed: 0,species,image,...,Folder,...)")
    df = pd.DataFrame({"row": raw["row"]})
    base = basename(text(raw["image"], cfg))
    df["path"] = text(raw["Folder"], cfg) + "/" + base
    for lv, col in level_cols.items():
        df[lv] = text(raw[col], cfg)
    if cfg.bbox_json:
        attach_bbox(df, image_id(base), load_bbox_json(cfg.bbox_json))
    return finish(df, levels, bool(cfg.bbox_json))
