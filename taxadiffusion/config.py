"""Typed configuration: ``params.yaml`` -> one dataclass per section -> function arguments.

Every stage reads only its own section(s) through :func:`load_params`, so DVC's per-stage ``params:``
lists in ``dvc.yaml`` stay honest. Unknown keys are an error (a typo in ``params.yaml`` must not be
silently ignored).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import UserError

DEFAULT_LEVELS = ["class", "order", "family", "genus", "species"]


@dataclass
class DatasetConfig:
    """Which annotation file to read and how (``prepare`` / ``shard``)."""

    name: str = "synthetic"  # synthetic | fishnet | bioscan1m | inat2021 | table
    metadata: str = "data/synthetic/annotations.csv"  # the dataset's own annotation file
    images: str = "data/synthetic/images"  # image root
    resolution: int = 32  # training resolution (square)
    # Name synonyms per level, e.g. {"class": {"Actinopterygii": "Actinopteri"}} (FishNet).
    synonyms: dict = field(default_factory=dict)
    # Column map {level | "image" | "bbox_x" | "bbox_y" | "bbox_w" | "bbox_h": column}; for `table` it is the
    # whole map, for fishnet/bioscan1m it overrides single columns (e.g. {order: NewOrder}).
    columns: dict = field(default_factory=dict)
    bbox_json: Optional[str] = None  # FishNet: {image_id: {x, y, w, h}} crops
    preprocess: str = "center_crop"  # center_crop | resize | pad_white (BIOSCAN)


@dataclass
class SynthesizeConfig:
    """The built-in synthetic taxonomy world (the embedded default dataset)."""

    seed: int = 0
    out: str = "data/synthetic"
    image_size: int = 32
    n_classes: int = 4
    images_per_species: list = field(default_factory=lambda: [1, 60])  # min, max (long tail)


@dataclass
class PrepareConfig:
    seed: int = 0
    test_fraction: float = 0.2
    check_images: str = "header"  # none | header | decode
    max_examples: int = 20  # example rows kept per drop reason in report.json


@dataclass
class ShardConfig:
    samples_per_shard: int = 1000


@dataclass
class ModelConfig:
    """The base model that plays SD1.5's role (``base`` stage)."""

    preset: str = "tiny"  # tiny | sd15
    # tiny: a folder in the repo; sd15: local diffusers folder or hub id.
    pretrained: str = "assets/tiny-base"
    revision: Optional[str] = None
    cache_latents: bool = True  # sd15: encode training images with the VAE once, in `base`
    # Condition module (method.md §1.2): one TransformerEncoder per level.
    cond_layers: int = 2
    cond_heads: int = 8
    cond_ff: int = 2048
    cond_dropout: float = 0.1


@dataclass
class TrainConfig:
    """Progressive training (method.md §2, supplement Table S1)."""

    steps: int = 250_000  # per level
    batch_size: int = 32
    lr_first: float = 1e-4  # level 0: LoRA + module 0
    lr: float = 1e-5  # levels >= 1: only that level's module
    lora_rank: int = 4
    lora_alpha: int = 4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    level_dropout: float = 1.0 / 21.0  # per level, one level at most (official FishNet loader)
    noise_schedule: str = "base"  # base = the base model's own (SD1.5: scaled_linear) | linear (official code) | ...
    # the sampler reads the base config too, so `base` keeps training and sampling on one schedule
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 42
    scratch: str = "scratch/train"  # resumable checkpoints, outside DVC outs
    num_workers: int = 0

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise UserError(f"params.yaml train.mixed_precision={self.mixed_precision!r}: expected no, bf16 or fp16")


@dataclass
class GenerateConfig:
    sampler: str = "pndm"  # pndm | ddpm | ddim | dpmsolver++
    batch_size: int = 64
    seed: int = 0
    dtype: str = "fp32"  # fp32 | bf16 | fp16
    guidance: str = "taxaguide"  # taxaguide | cfg
    guidance_range: list = field(default_factory=lambda: [0.0, 1.0])  # fraction of steps guided
    target_level: str = "species"
    max_species_per_class: int = 400
    images_per_species_capped: int = 15  # classes that hit the cap
    images_per_species: int = 50  # other classes
    out: str = "data/generated"


@dataclass
class ProbeConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    seed: int = 0


@dataclass
class EvaluateConfig:
    backbones: list = field(default_factory=lambda: ["probe"])  # probe | inception | vgg | alex | bioclip
    inception_weights: Optional[str] = None  # local torch-fidelity Inception weights (offline)
    lpips_net: str = "vgg"  # vgg | alex
    lpips_weights: Optional[str] = None  # local torchvision backbone weights
    bioclip_model: str = "hf-hub:imageomics/bioclip"  # or /path/ckpt, or local-dir:/path
    bioclip_template: str = "{lineage}"
    min_images_for_fid: int = 50
    real_split: str = "test"  # test | train+test
    batch_size: int = 64
    cache_dir: str = "data/features"
    grid_species: int = 8


@dataclass
class Params:
    """All of params.yaml. Top-level keys are the ones users sweep with ``dvc exp run -S``."""

    seed: int = 0
    guidance_scale: float = 6.0
    num_inference_steps: int = 250
    methods: list = field(default_factory=lambda: ["taxadiffusion"])
    # Ordered coarse -> fine; each item names its parent stage output (DVC foreach has no "previous item").
    levels: dict = field(default_factory=lambda: {lv: {} for lv in DEFAULT_LEVELS})
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    shard: ShardConfig = field(default_factory=ShardConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    @property
    def level_names(self) -> list[str]:
        return list(self.levels.keys())


def _build(cls, data: Any, where: str):
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise UserError(f"params.yaml: section '{where}' must be a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"params.yaml: unknown key(s) {unknown} in section '{where}'")
    kwargs = {}
    for key, value in data.items():
        f = names[key]
        if dataclasses.is_dataclass(f.type if isinstance(f.type, type) else None):
            value = _build(f.type, value, f"{where}.{key}" if where else key)
        kwargs[key] = value
    return cls(**kwargs)


_SECTIONS = {
    "dataset": DatasetConfig,
    "synthesize": SynthesizeConfig,
    "prepare": PrepareConfig,
    "shard": ShardConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "probe": ProbeConfig,
    "evaluate": EvaluateConfig,
}


def params_from_dict(data: dict) -> Params:
    """Build :class:`Params` from a parsed params.yaml mapping (unknown keys are errors)."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(Params)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"params.yaml: unknown top-level key(s) {unknown}")
    kwargs = {}
    for key, value in data.items():
        if key in _SECTIONS:
            kwargs[key] = _build(_SECTIONS[key], value, key)
        else:
            kwargs[key] = value
    params = Params(**kwargs)
    if not params.levels:
        raise UserError("params.yaml: 'levels' must list at least one taxonomic level")
    return params


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (only true/false), as DVC (ruamel) reads params.yaml.

    YAML 1.1 also reads yes/no/on/off as booleans, and `dvc exp run -S ...` rewrites params.yaml without
    quotes: measured, `-S methods=[...]` turned `mixed_precision: "no"` into `no`, which PyYAML read as false.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read ``params.yaml`` into :class:`Params`; a missing or malformed file is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found (run from the repository root)")
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return params_from_dict(data)
