"""A real trained-level folder (``models/<level>/``) with small random weights.

Built through the same code the trainer uses (:func:`taxadiffusion.models.level.build_level_model` and
``write_level`` on the tiny base from ``assets/tiny-base``), so loaders are exercised for real, never mocked.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch

from taxadiffusion.config import ModelConfig
from taxadiffusion.models.base import load_base
from taxadiffusion.models.level import LevelConfig, build_level_model, write_level
from taxadiffusion.training.specs import progressive_spec

from .params import section

REPO = Path(__file__).resolve().parents[2]
TINY_BASE = REPO / "assets" / "tiny-base"
LEVELS = ["class", "order", "family", "genus", "species"]


def tiny_model_config() -> ModelConfig:
    """params.yaml's model section on the shipped tiny base, with a one-layer, narrow condition module."""
    return section("model", {"pretrained": str(TINY_BASE), "cond_layers": 1, "cond_ff": 64})


def make_level_dir(
    directory: str | Path,
    levels: list[str] = LEVELS,
    level: str = "species",
    seed: int = 0,
    lora_std: float = 0.02,
) -> Path:
    """Write a trained-level folder as ``train@<level>`` does: LoRA, condition module, train_config.json.

    The modules are new (random, from ``seed``); a non-zero LoRA ``B`` matrix (peft's gaussian init leaves
    it at zero) makes a test notice a LoRA that fails to load.
    """
    model_cfg = tiny_model_config()
    train_cfg = section("train")
    spec = progressive_spec(train_cfg, list(levels), level)
    # a level k >= 1 folder carries the LoRA it inherited from level 0
    config = dataclasses.replace(LevelConfig.for_run(spec, train_cfg, model_cfg, list(levels), seed, parent=None),
                                 lora_rank=train_cfg.lora_rank, lora_alpha=train_cfg.lora_alpha)
    base = load_base(model_cfg)
    unet, conditioner = build_level_model(base, config, None)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, lora_std)
    return write_level(directory, config, unet, conditioner)


def lineage(cls: str, order: str, family: str, genus: str, epithet: str) -> dict:
    return {"class": cls, "order": order, "family": family, "genus": genus, "species": f"{genus} {epithet}"}


def make_prepared(directory: str | Path, rows: list[tuple[dict, str]]) -> Path:
    """Write ``table.parquet`` + ``taxonomy.json`` (docs/architecture.md ``prepare``) from (lineage, split) rows."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records = [{"path": f"img{i}.png", **lin, "split": split, "row": i + 1} for i, (lin, split) in enumerate(rows)]
    pd.DataFrame(records).to_parquet(directory / "table.parquet", index=False)
    lineages = sorted({tuple(lin[lv] for lv in LEVELS) for lin, _ in rows})
    (directory / "taxonomy.json").write_text(json.dumps({"levels": LEVELS, "lineages": [list(x) for x in lineages]}))
    return directory
