"""The model and training sections of ``params.yaml``: ``model``, ``train``, ``preview``.

No field has a default value (``params.yaml`` is the only source of defaults); each section validates itself in
``__post_init__`` with :mod:`taxadiffusion.config.checks`, against the vocabularies of
:mod:`taxadiffusion.config.vocab`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from taxadiffusion.config.checks import bad, check_choice, check_float, check_int, check_str
from taxadiffusion.config.sampling import SamplingConfig
from taxadiffusion.config.vocab import (
    BASELINE_BUDGETS,
    GUIDANCES,
    MIXED_PRECISION,
    NOISE_SCHEDULES,
    PRESETS,
    SAMPLERS,
    SPECIES_TEXTS,
)


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
    batch_size: int  # the global batch of one optimiser step, however many processes (Table S1: 192)
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
    mixed_precision: str  # no | bf16 | fp16 (autocast; trainable params stay fp32, frozen weights in this dtype)
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
        check_choice("train.species_text", self.species_text, SPECIES_TEXTS)
        check_choice("train.baseline_budget", self.baseline_budget, BASELINE_BUDGETS)


@dataclass
class PreviewConfig:
    """Fixed-seed sample grids written during training (docs/figures.md "Previews")."""

    every: int  # training steps between previews (the last step always gets one); 0: none
    taxa: int  # taxa of the level being trained, one per class in turn
    per_taxon: int  # images per taxon
    sampler: str
    steps: int
    scale: float
    guidance: str

    def __post_init__(self):
        check_int("preview.every", self.every, 0)
        check_int("preview.taxa", self.taxa, 1)
        check_int("preview.per_taxon", self.per_taxon, 1)
        check_choice("preview.sampler", self.sampler, SAMPLERS)
        check_int("preview.steps", self.steps, 1)
        self.scale = check_float("preview.scale", self.scale, 0.0)
        check_choice("preview.guidance", self.guidance, GUIDANCES)

    @property
    def sampling(self) -> SamplingConfig:
        """What the preview is drawn with: every step guided, fp32 (the training weights' dtype)."""
        return SamplingConfig(self.sampler, self.steps, self.scale, self.guidance, (0.0, 1.0), "fp32")
