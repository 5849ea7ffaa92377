"""The progressive levels as training runs: :func:`progressive_spec` (docs/method.md §2)."""

from __future__ import annotations

from taxadiffusion.config import TrainConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.models.train_spec import TrainSpec


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
