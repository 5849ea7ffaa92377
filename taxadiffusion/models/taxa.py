"""A trained TaxaDiffusion model: base + LoRA + taxonomy condition module + text cache.

``models/<level>/`` (written by ``train@<level>``) is self-contained: ``condition.safetensors`` (all level
modules), ``pytorch_lora_weights.safetensors`` and ``train_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import UserError
from .base import BaseModel, load_base
from .conditioner import TaxonomyConditioner, lineage_texts, level_text, species_prompt
from .lora import LORA_FILE, add_lora, load_lora
from .text_cache import TextEmbeddingCache


@dataclass
class TaxaModel:
    base: BaseModel
    conditioner: TaxonomyConditioner
    cache: TextEmbeddingCache
    levels: list
    train_config: dict

    @property
    def prompt_only(self) -> bool:
        """Baselines (sd, lora, full): conditioned on the species name through the text encoder alone."""
        return bool(self.train_config.get("prompt_only"))

    @property
    def device(self) -> torch.device:
        return self.cache.device

    def hidden(self, lineages: list[dict], cut_off: int) -> torch.Tensor:
        """Text-encoder states ``[B, cut_off + 1, T, D]`` of levels 0..cut_off (lower levels are unused)."""
        texts = [lineage_texts(self.levels, lin, cut_off)[: cut_off + 1] for lin in lineages]
        return self.cache.lineages(texts).to(next(self.conditioner.parameters()).dtype)

    @torch.no_grad()
    def condition(self, lineages: list[dict], cut_off: int) -> torch.Tensor:
        """The conditional context ``[B, T, D]``: lineage up to ``cut_off`` through levels 0..cut_off."""
        if self.prompt_only:
            return self.cache([species_prompt(lin, self.levels[: cut_off + 1]) for lin in lineages])
        return self.conditioner(self.hidden(lineages, cut_off), cut_off)

    @torch.no_grad()
    def negative(self, lineages: list[dict], cut_off: int, guidance: str) -> torch.Tensor:
        """Guidance branch (method.md §3).

        ``taxaguide``: the same lineage through the level-0 module only; at cut_off 0 the official code
        uses the raw text embedding of ``"<level0>: None"``. ``cfg``: the raw embedding of ``""``.
        """
        n = len(lineages)
        if guidance == "cfg" or self.prompt_only:  # the baselines only have vanilla CFG
            return self.cache([""] * n)
        if guidance != "taxaguide":
            raise UserError(f"generate.guidance={guidance!r}: expected 'taxaguide' or 'cfg'")
        if cut_off == 0:
            return self.cache([level_text(self.levels[0], None)] * n)
        return self.conditioner(self.hidden(lineages, 0), 0)


def load_taxa_model(model_dir: str | Path, model_cfg: ModelConfig, device="cpu", dtype=torch.float32) -> TaxaModel:
    model_dir = Path(model_dir)
    config_path = model_dir / "train_config.json"
    if not config_path.exists():
        raise UserError(f"{model_dir}: not a trained level (no train_config.json); run `dvc repro` first")
    train_config = json.loads(config_path.read_text())
    base = load_base(model_cfg, device=device)
    if (model_dir / LORA_FILE).exists():
        add_lora(base.unet, train_config.get("lora_rank", 4), train_config.get("lora_alpha", 4))
        load_lora(base.unet, model_dir)
    if train_config.get("full_unet"):
        from diffusers import UNet2DConditionModel

        base.unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    base.unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if (model_dir / "condition.safetensors").exists():
        conditioner = TaxonomyConditioner.load(model_dir)
    else:  # `sd` baseline: the base model alone (prompt_only), no condition module was trained
        from .conditioner import ConditionerConfig

        conditioner = TaxonomyConditioner(ConditionerConfig(levels=train_config["levels"][:1], width=base.text_hidden, num_layers=1))
    conditioner = conditioner.to(device=device, dtype=dtype).eval().requires_grad_(False)
    cache = TextEmbeddingCache(base.text_encoder, base.tokenizer, device=device)
    return TaxaModel(base, conditioner, cache, list(train_config["levels"]), train_config)
