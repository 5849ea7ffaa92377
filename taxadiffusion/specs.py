"""What each training run updates: the progressive levels and the paper's baselines/ablations.

A :class:`TrainSpec` is the one place a run's learning rate and step count are chosen (from the
``train`` section); :func:`taxadiffusion.training.train` reads them from the spec only. The labels and
the paper's FishNet numbers of the comparison table live here too (docs/method.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import TrainConfig
from .errors import UserError


METHOD_FILE = "method.json"  # what a method samples from and how long it trained (copied next to its metrics)


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """What one training run updates and how it conditions (progressive level, or a baseline/ablation)."""

    name: str  # the run's label (its level, or methods/<m>); the output folder comes from the stage args
    parent: str | None  # the level it starts from (None: new condition module / LoRA)
    cut_off: int  # highest level used in the condition
    train_levels: tuple  # condition-module levels whose weights train
    train_lora: bool
    full_unet: bool  # SD + full fine-tuning baseline
    random_cut_off: bool  # ablation: a random level per step
    prompt_only: bool  # baselines: condition = the text encoder on the species name alone
    lr: float  # the run's learning rate (train.lr_first or train.lr)
    steps: int  # optimiser steps of this run

    def __post_init__(self):
        object.__setattr__(self, "train_levels", tuple(int(i) for i in self.train_levels))
        if self.steps < 1:
            raise UserError(f"training run {self.name!r}: steps={self.steps}; must be >= 1")
        if not self.lr > 0:
            raise UserError(f"training run {self.name!r}: lr={self.lr}; must be > 0")


def progressive_spec(cfg: TrainConfig, levels: list[str], level: str) -> TrainSpec:
    """Level k of progressive training (docs/method.md §2): level 0 trains the LoRA + module 0 at
    ``train.lr_first``; level k >= 1 trains module k alone at ``train.lr``, from level k-1."""
    if level not in levels:
        raise UserError(f"--level {level!r}: not one of params.yaml levels {list(levels)}")
    k = list(levels).index(level)
    return TrainSpec(
        name=level,
        parent=None if k == 0 else levels[k - 1],
        cut_off=k,
        train_levels=(k,),
        train_lora=k == 0,
        full_unet=False,
        random_cut_off=False,
        prompt_only=False,
        lr=cfg.lr_first if k == 0 else cfg.lr,
        steps=cfg.steps,
    )


METHODS = ("taxadiffusion", "sd", "lora", "full", "joint", "random_level", "cfg")

# Species-level numbers of the paper on FishNet: FID, LPIPS, BioCLIP (docs/method.md §6; via a
# third-party summary, unverified).
PAPER_FISHNET = {
    "sd": (61.93, 0.7737, 3.35),
    "lora": (43.91, 0.7574, 7.61),
    "full": (39.41, 0.7574, 8.31),
    "taxadiffusion": (31.87, 0.7319, 10.43),
    "joint": (32.43, 0.7487, 9.32),
    "random_level": (29.53, 0.7429, 9.85),
    "cfg": (47.61, 0.7313, 9.45),  # the guidance ablation's vanilla-CFG row
}
LABELS = {
    "sd": "SD (base, zero-shot)",
    "lora": "SD + LoRA",
    "full": "SD + full fine-tuning",
    "taxadiffusion": "TaxaDiffusion (progressive, TaxaGuide)",
    "joint": "Ablation: all levels jointly",
    "random_level": "Ablation: random level per step",
    "cfg": "Ablation: vanilla CFG instead of TaxaGuide",
}


# Supplement Table S1: SD + full fine-tuning trains 100K steps where SD + LoRA and each TaxaDiffusion level train 250K.
PAPER_FULL_STEPS = (100_000, 250_000)
BUDGETS = {
    "equal": "equal compute: every trained baseline gets train.steps x levels, progressive training's total",
    "paper": "the paper's (Table S1): SD+LoRA train.steps, SD+full fine-tuning 100K/250K of it; the ablations "
             "train.steps x levels",
}


def baseline_steps(cfg: TrainConfig, levels: list[str], method: str) -> int:
    """Steps of a trained baseline under ``train.baseline_budget`` (docs/method.md §2 "Budgets").

    ``equal``: ``train.steps`` x number of levels for each. ``paper``: SD+LoRA ``train.steps`` (250K, as one
    level), full fine-tuning ``train.steps`` x 100K/250K (rounded); the paper gives no budget for the
    ablations (joint, random level), so they keep progressive training's total under both.
    """
    if cfg.baseline_budget == "equal" or method not in ("lora", "full"):
        return cfg.steps * len(levels)
    if method == "lora":
        return cfg.steps
    num, den = PAPER_FULL_STEPS
    return max(1, (cfg.steps * num + den // 2) // den)


def check_methods(methods: list) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"params.yaml methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    return list(methods)


def method_spec(cfg: TrainConfig, levels: list[str], method: str) -> TrainSpec | None:
    """Baselines and ablations of the paper's comparison tables (None: nothing to train).

    Steps: :func:`baseline_steps` (``train.baseline_budget``). ``sd`` = the base model, no fine-tuning;
    ``taxadiffusion`` = the main pipeline; ``cfg`` = the TaxaDiffusion model sampled with vanilla CFG
    (generation-side only).
    """
    check_methods([method])
    if method in ("taxadiffusion", "sd", "cfg"):
        return None
    every = tuple(range(len(levels)))
    last = len(levels) - 1
    common = dict(name=f"methods/{method}", parent=None, random_cut_off=False,
                  steps=baseline_steps(cfg, levels, method))
    if method == "lora":  # SD + LoRA on the species name (supplement Table S1: lr 1e-4)
        return TrainSpec(**common, cut_off=0, train_levels=(), train_lora=True, full_unet=False, prompt_only=True,
                         lr=cfg.lr_first)
    if method == "full":  # SD + full fine-tuning on the species name (Table S1: lr 1e-5)
        return TrainSpec(**common, cut_off=0, train_levels=(), train_lora=False, full_unet=True, prompt_only=True,
                         lr=cfg.lr)
    if method == "joint":  # all level modules + LoRA together, full lineage
        return TrainSpec(**common, cut_off=last, train_levels=every, train_lora=True, full_unet=False,
                         prompt_only=False, lr=cfg.lr_first)
    # random_level: all modules + LoRA, a random cut-off level per step
    return TrainSpec(**{**common, "random_cut_off": True}, cut_off=last, train_levels=every, train_lora=True,
                     full_unet=False, prompt_only=False, lr=cfg.lr_first)
