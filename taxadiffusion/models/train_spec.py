"""What one training run updates: :class:`TrainSpec` (a progressive level, or a baseline / ablation).

A spec is the one place a run's learning rate and step count are chosen (from the ``train`` section);
training reads them from the spec only, and the trained-level folder records it (``train_config.json``).
Specs are made by :func:`taxadiffusion.training.specs.progressive_spec` and
:func:`taxadiffusion.comparison.methods.method_spec`.
"""

from __future__ import annotations

from dataclasses import dataclass

from taxadiffusion.core.errors import UserError


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
