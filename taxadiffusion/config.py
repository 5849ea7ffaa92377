"""Typed configuration: ``params.yaml`` -> one dataclass per section -> the section (or plain values).

``params.yaml`` is the only source of defaults: no field below has a default value, so a key missing from
the file is a one-line error naming it, never a silently substituted value (the paper's values are given
in ``params.yaml``'s comments). Each section validates itself where it is built
(``__post_init__``): types, ranges and choices, so no stage starts on a value it cannot use. Unknown keys
are errors too (a typo must not be ignored). Stages pass sections, not the whole :class:`Params`, to the
library, so DVC's per-stage ``params:`` lists in ``dvc.yaml`` stay honest.

Seeds: the top-level ``seed`` seeds the *experiment* (training of every level and method, the generation
plan and image noise, the probe); ``synthesize.seed`` (the synthetic world) and ``prepare.seed`` (the
train/test split) define the *data* and stay fixed while ``dvc exp run -S seed=1,2`` repeats an experiment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .checks import bad
from .checks import check_choice, check_float, check_int, check_list, check_mapping, check_str
from .errors import UserError
from .paramsfile import read_params_dict
# re-exported: every section is had from here (the generation / evaluation side is written in sections.py)
from .sections import (BACKBONES, DTYPE_NAMES, GUIDANCES, SAMPLERS, EvaluateConfig, FiguresConfig,  # noqa: F401
                       GenerateConfig, PreviewConfig, ProbeConfig, SamplingConfig)
DATASETS = ("synthetic", "fishnet", "bioscan1m", "inat2021", "table")
PREPROCESS = ("center_crop", "resize", "pad_white")
CHECK_IMAGES = ("none", "header", "decode")
PRESETS = ("tiny", "sd15")
MIXED_PRECISION = ("no", "bf16", "fp16")
NOISE_SCHEDULES = ("base", "scaled_linear", "linear", "squaredcos_cap_v2")
METHOD_NAMES = ("taxadiffusion", "sd", "lora", "full", "joint", "random_level", "cfg")
SPECIES_TEXTS = ("as_written", "epithet")  # the species level's condition text (docs/method.md §1.2)
BASELINE_BUDGETS = ("equal", "paper")  # steps of the trained baselines (docs/method.md §2 "Budgets")


# --------------------------------------------------------------------------------------------------
# Sections


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

    def __post_init__(self):
        check_int("prepare.seed", self.seed)
        check_str("prepare.finest_required", self.finest_required)
        self.test_fraction = check_float("prepare.test_fraction", self.test_fraction, 0.0, 1.0)
        if self.test_fraction >= 1.0:  # every test species must keep a training image (per-species FID, probe)
            raise bad("prepare.test_fraction", self.test_fraction, "a number in [0, 1)")
        check_choice("prepare.check_images", self.check_images, CHECK_IMAGES)
        check_int("prepare.max_examples", self.max_examples, 0)


@dataclass
class ShardConfig:
    samples_per_shard: int

    def __post_init__(self):
        check_int("shard.samples_per_shard", self.samples_per_shard, 1)


@dataclass
class ModelConfig:
    """The base model that plays SD1.5's role, and the condition module's size (docs/method.md §1)."""

    preset: str  # tiny | sd15
    pretrained: str  # tiny: a folder in the repo; sd15: a local diffusers folder or a hub id
    revision: Optional[str]
    cache_latents: bool  # sd15: encode the training images with the VAE once, in `base`
    cond_layers: int  # one TransformerEncoder of this many layers per level (docs/method.md §1.2)
    cond_heads: int  # must divide the text encoder's width (checked when the module is built)
    cond_ff: int
    cond_dropout: float

    def __post_init__(self):
        check_choice("model.preset", self.preset, PRESETS)
        check_str("model.pretrained", self.pretrained)
        check_str("model.revision", self.revision, optional=True)
        if not isinstance(self.cache_latents, bool):
            raise bad("model.cache_latents", self.cache_latents, "true or false")
        check_int("model.cond_layers", self.cond_layers, 1)
        check_int("model.cond_heads", self.cond_heads, 1)
        check_int("model.cond_ff", self.cond_ff, 1)
        self.cond_dropout = check_float("model.cond_dropout", self.cond_dropout, 0.0, 1.0)


@dataclass
class TrainConfig:
    """Progressive training (docs/method.md §2, supplement Table S1). Seeded by the top-level ``seed``."""

    steps: int  # per level
    batch_size: int  # per process
    lr_first: float  # level 0: LoRA + module 0
    lr: float  # levels >= 1: only that level's module
    lora_rank: int
    lora_alpha: int
    adam_beta1: float
    adam_beta2: float
    weight_decay: float
    max_grad_norm: float
    level_dropout: float  # per level, at most one level per sample (official loader); <= 1/len(levels)
    noise_schedule: str  # base (the base model's own; the sampler's too) | linear (official code) | ...
    mixed_precision: str  # no | bf16 | fp16
    gradient_checkpointing: bool
    checkpoint_every: int  # 0: no step checkpoints
    log_every: int
    num_workers: int
    species_text: str  # as_written (FishNet, BIOSCAN: the binomial) | epithet (iNat) (docs/method.md §1.2)
    baseline_budget: str  # equal (train.steps x levels each) | paper (Table S1: lora train.steps, full 0.4x)

    def __post_init__(self):
        check_int("train.steps", self.steps, 1)
        check_int("train.batch_size", self.batch_size, 1)
        self.lr_first = check_float("train.lr_first", self.lr_first, 0.0, lo_open=True)
        self.lr = check_float("train.lr", self.lr, 0.0, lo_open=True)
        check_int("train.lora_rank", self.lora_rank, 1)
        check_int("train.lora_alpha", self.lora_alpha, 1)
        self.adam_beta1 = check_float("train.adam_beta1", self.adam_beta1, 0.0, 1.0)
        self.adam_beta2 = check_float("train.adam_beta2", self.adam_beta2, 0.0, 1.0)
        self.weight_decay = check_float("train.weight_decay", self.weight_decay, 0.0)
        self.max_grad_norm = check_float("train.max_grad_norm", self.max_grad_norm, 0.0, lo_open=True)
        self.level_dropout = check_float("train.level_dropout", self.level_dropout, 0.0, 1.0)
        check_choice("train.noise_schedule", self.noise_schedule, NOISE_SCHEDULES)
        check_choice("train.mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if not isinstance(self.gradient_checkpointing, bool):
            raise bad("train.gradient_checkpointing", self.gradient_checkpointing, "true or false")
        check_int("train.checkpoint_every", self.checkpoint_every, 0)
        check_int("train.log_every", self.log_every, 1)
        check_int("train.num_workers", self.num_workers, 0)
        check_choice("train.species_text", self.species_text, SPECIES_TEXTS)
        check_choice("train.baseline_budget", self.baseline_budget, BASELINE_BUDGETS)


@dataclass
class Params:
    """All of params.yaml. Top-level keys are the ones users sweep with ``dvc exp run -S``."""

    seed: int  # the experiment: training, generation plan and noise, probe (module docstring)
    guidance_scale: float  # TaxaGuide / CFG scale s (diffusers convention, s = 1 + w)
    num_inference_steps: int
    methods: list
    # Ordered coarse -> fine; each item names its parent stage output (DVC foreach has no "previous item").
    levels: dict
    dataset: DatasetConfig
    synthesize: SynthesizeConfig
    prepare: PrepareConfig
    shard: ShardConfig
    model: ModelConfig
    train: TrainConfig
    generate: GenerateConfig
    probe: ProbeConfig
    evaluate: EvaluateConfig
    figures: FiguresConfig
    preview: PreviewConfig
    sampling: SamplingConfig = field(init=False)  # derived, not a key of params.yaml

    def __post_init__(self):
        check_int("seed", self.seed, 0)
        if not isinstance(self.levels, dict) or not self.levels:
            raise bad("levels", self.levels, "a mapping of level names (coarse to fine) to {parent: ...}")
        for name, spec in self.levels.items():
            if not isinstance(name, str) or not name or not isinstance(spec, dict):
                raise bad(f"levels.{name}", spec, "{parent: <previous level or base>}")
        for i, method in enumerate(check_list("methods", self.methods)):
            check_choice(f"methods[{i}]", method, METHOD_NAMES)
        check_choice("generate.target_level", self.generate.target_level, tuple(self.levels))
        check_choice("figures.embedding_level", self.figures.embedding_level, tuple(self.levels))
        check_choice("prepare.finest_required", self.prepare.finest_required, tuple(self.levels))
        # Condition dropout drops at most one level per sample with probability p each (docs/method.md §2):
        # that is a distribution only while len(levels) * p <= 1.
        limit = 1.0 / len(self.levels)
        if self.train.level_dropout > limit + 1e-12:
            raise bad("train.level_dropout", self.train.level_dropout,
                       f"a probability per level in [0, 1/{len(self.levels)}] = [0, {limit:.4g}] "
                       "(at most one level is dropped per sample)")
        g = self.generate
        self.sampling = SamplingConfig(g.sampler, self.num_inference_steps, self.guidance_scale, g.guidance,
                                       tuple(g.guidance_range), g.dtype)
        self.guidance_scale = self.sampling.scale

    @property
    def level_names(self) -> list[str]:
        return list(self.levels.keys())


_CLASSES = {
    "dataset": DatasetConfig,
    "synthesize": SynthesizeConfig,
    "prepare": PrepareConfig,
    "shard": ShardConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "probe": ProbeConfig,
    "evaluate": EvaluateConfig,
    "figures": FiguresConfig,
    "preview": PreviewConfig,
}


def _keys(cls, data: Any, where: str) -> dict:
    """``data`` as the keyword arguments of ``cls``: exactly its init fields, else a one-line error."""
    label = f"section '{where}'" if where else "the top level"
    if not isinstance(data, dict):
        raise UserError(f"params.yaml: {label} must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise UserError(f"params.yaml: unknown key(s) {unknown} in {label}")
    missing = [n for n in names if n not in data]
    if missing:
        prefix = f"{where}." if where else ""
        raise UserError(f"params.yaml: missing key(s) {[prefix + n for n in missing]} "
                        "(params.yaml is the only source of defaults: copy them from the repository's params.yaml)")
    return dict(data)


def params_from_dict(data: dict) -> Params:
    """Build :class:`Params` from a parsed params.yaml mapping (unknown or missing keys are errors)."""
    kwargs = _keys(Params, data or {}, "")
    for key, cls in _CLASSES.items():
        kwargs[key] = cls(**_keys(cls, kwargs[key], key))
    return Params(**kwargs)


def section_from_dict(name: str, data: dict):
    """One section (e.g. ``"model"``) from its mapping, validated like :func:`params_from_dict` does."""
    cls = _CLASSES[name]
    return cls(**_keys(cls, data, name))


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` into :class:`Params` (one-line errors for anything wrong)."""
    return params_from_dict(read_params_dict(path))
