"""The data sections of ``params.yaml``: ``dataset``, ``synthesize``, ``prepare``, ``shard``.

No field has a default value (``params.yaml`` is the only source of defaults); each section validates itself in
``__post_init__`` with :mod:`taxadiffusion.config.checks`, against the vocabularies of
:mod:`taxadiffusion.config.vocab`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from taxadiffusion.config.checks import bad, check_choice, check_float, check_int, check_list, check_mapping, check_str
from taxadiffusion.config.vocab import CHECK_IMAGES, DATASETS, PREPROCESS


@dataclass
class DatasetConfig:
    """Which annotation file to read and how (``prepare`` / ``shard``)."""

    name: str  # synthetic | fishnet | bioscan1m | inat2021 | table
    metadata: str  # the dataset's own annotation file
    images: str  # image root
    resolution: int  # training resolution (square); must equal the base model's (checked by `base`)
    synonyms: dict  # per level, e.g. {"class": {"Actinopterygii": "Actinopteri"}} (FishNet)
    # {level | "image" | "bbox_x" | "bbox_y" | "bbox_w" | "bbox_h": column}; for `table` the whole map,
    # for fishnet/bioscan1m single overrides (e.g. {order: NewOrder})
    columns: dict
    bbox_json: Optional[str]  # FishNet: {image_id: {x, y, w, h}} crops
    preprocess: str  # center_crop | resize | pad_white (BIOSCAN)
    na_values: list  # rank / image texts read as missing (R's "NA", pandas' "nan", BIOSCAN's "not_classified")

    def __post_init__(self):
        check_choice("dataset.name", self.name, DATASETS)
        check_str("dataset.metadata", self.metadata)
        check_str("dataset.images", self.images)
        # every base needs a multiple of 8 (SD1.5's VAE: 8x; tiny's space-to-depth: 2x, UNet: 4x more)
        if check_int("dataset.resolution", self.resolution, 8) % 8:
            raise bad("dataset.resolution", self.resolution, "a multiple of 8")
        synonyms = check_mapping("dataset.synonyms", self.synonyms)
        for level, table in synonyms.items():
            check_mapping(f"dataset.synonyms.{level}", table)
        check_mapping("dataset.columns", self.columns)
        check_str("dataset.bbox_json", self.bbox_json, optional=True)
        check_choice("dataset.preprocess", self.preprocess, PREPROCESS)
        if not isinstance(self.na_values, list) or not all(isinstance(v, str) for v in self.na_values):
            raise bad("dataset.na_values", self.na_values, "a list of strings (quote YAML's null / NA / None)")


@dataclass
class SynthesizeConfig:
    """The built-in synthetic taxonomy world (the embedded default dataset)."""

    seed: int  # the world (taxonomy, traits, images); not the experiment's `seed`
    image_size: int
    n_classes: int
    images_per_species: list  # [min, max] (long tail)

    def __post_init__(self):
        check_int("synthesize.seed", self.seed)
        check_int("synthesize.image_size", self.image_size, 8)
        check_int("synthesize.n_classes", self.n_classes, 1)
        span = check_list("synthesize.images_per_species", self.images_per_species)
        if len(span) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in span) \
                or not 1 <= span[0] <= span[1]:
            raise bad("synthesize.images_per_species", span, "[min, max] integers with 1 <= min <= max")


@dataclass
class PrepareConfig:
    seed: int  # the train/test split; not the experiment's `seed`
    test_fraction: float
    check_images: str  # none | header | decode
    max_examples: int  # example rows kept per drop reason in report.json
    finest_required: str  # a level of `levels`: rows must name every level down to it (finer ones may be missing)
    placeholder_words: list  # a species with one of these words after the genus is no species ("Gotium sp.")

    def __post_init__(self):
        check_int("prepare.seed", self.seed)
        check_str("prepare.finest_required", self.finest_required)
        # (0, 1): 0 leaves generate and evaluate without a test split (found only after every training level);
        # 1 would leave test species untrained (per-species FID and the probe need them in train too)
        self.test_fraction = check_float("prepare.test_fraction", self.test_fraction)
        if not 0.0 < self.test_fraction < 1.0:
            raise bad("prepare.test_fraction", self.test_fraction, "a number in (0, 1)")
        check_choice("prepare.check_images", self.check_images, CHECK_IMAGES)
        check_int("prepare.max_examples", self.max_examples, 0)
        # compared to whole words of a species name without a final "." (data/taxon_names.py)
        words = self.placeholder_words
        if not isinstance(words, list) or not all(isinstance(w, str) and w.rstrip(".") and len(w.split()) == 1
                                                  and w == w.strip() for w in words):
            raise bad("prepare.placeholder_words", words, 'a list of single words, e.g. [sp, spp, cf, aff, nr, "?"]')


@dataclass
class ShardConfig:
    samples_per_shard: int

    def __post_init__(self):
        check_int("shard.samples_per_shard", self.samples_per_shard, 1)
