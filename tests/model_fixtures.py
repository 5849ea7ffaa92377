"""Shared test fixtures: a real trained-level folder (``models/<level>/``) with small random weights.

Built through the same code the trainer uses (tiny base from ``assets/tiny-base``, peft LoRA saved in the
diffusers format, ``TaxonomyConditioner.save``), so loaders are exercised for real, never mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from taxadiffusion.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
TINY_BASE = REPO / "assets" / "tiny-base"
LEVELS = ["class", "order", "family", "genus", "species"]


def tiny_model_config() -> ModelConfig:
    return ModelConfig(preset="tiny", pretrained=str(TINY_BASE))


def make_level_dir(
    directory: str | Path,
    levels: list[str] = LEVELS,
    level: str = "species",
    seed: int = 0,
    lora_std: float = 0.02,
) -> Path:
    """Write a trained-level folder: LoRA (random, non-zero B so it changes the UNet), conditioner, config.

    The conditioner gets random weights from ``seed``; a non-zero LoRA ``B`` matrix (peft's gaussian init
    leaves it at zero) makes the test notice a LoRA that fails to load.
    """
    from taxadiffusion.models.base import load_base
    from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner
    from taxadiffusion.models.lora import add_lora, save_lora

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    base = load_base(tiny_model_config())
    add_lora(base.unet, 4, 4)
    with torch.no_grad():
        for name, param in base.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, lora_std)
    save_lora(base.unet, directory)
    cond = TaxonomyConditioner(ConditionerConfig(list(levels), width=64, num_layers=1, num_heads=4, ff_dim=64))
    cond.save(directory)
    (directory / "train_config.json").write_text(
        json.dumps(
            {
                "levels": list(levels),
                "level": level,
                "level_index": list(levels).index(level),
                "lora_rank": 4,
                "lora_alpha": 4,
            }
        )
    )
    return directory


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
