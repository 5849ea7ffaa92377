"""A trained TaxaDiffusion model: base + LoRA + taxonomy condition module + text cache.

``models/<level>/`` (written by ``train@<level>``; its files: :mod:`taxadiffusion.models.level`) is
self-contained on top of the base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from taxadiffusion.config import ModelConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.models.base import BaseModel, load_base, move
from taxadiffusion.models.conditioner import ModelLevels, TaxonomyConditioner, level_text, lineage_texts, species_prompt
from taxadiffusion.models.level import LevelConfig, build_level_model
from taxadiffusion.models.text_cache import TextEmbeddingCache


@dataclass
class TaxaModel:
    base: BaseModel
    conditioner: TaxonomyConditioner
    cache: TextEmbeddingCache
    levels: ModelLevels  # the level names, carrying the species text the model was trained with
    config: LevelConfig

    @property
    def prompt_only(self) -> bool:
        """Baselines (sd, lora, full): conditioned on the species name through the text encoder alone."""
        return self.config.prompt_only

    @property
    def species_text(self) -> str:
        """``as_written`` | ``epithet``: the species text of its training (docs/method.md §1.2)."""
        return self.config.species_text

    def texts(self, lineage: dict, cut_off: int) -> list[str]:
        """The condition texts of levels 0..cut_off, exactly as in training."""
        return lineage_texts(self.levels, lineage, cut_off, self.species_text)[: cut_off + 1]

    @property
    def device(self) -> torch.device:
        return self.cache.device

    def hidden(self, lineages: list[dict], cut_off: int) -> torch.Tensor:
        """Text-encoder states ``[B, cut_off + 1, T, D]`` of levels 0..cut_off (lower levels are unused)."""
        texts = [self.texts(lin, cut_off) for lin in lineages]
        return self.cache.lineages(texts).to(next(self.conditioner.parameters()).dtype)

    @torch.no_grad()
    def condition(self, lineages: list[dict], cut_off: int) -> torch.Tensor:
        """The conditional context ``[B, T, D]``: lineage up to ``cut_off`` through levels 0..cut_off."""
        if self.prompt_only:
            return self.cache([species_prompt(lin, self.levels[: cut_off + 1]) for lin in lineages])
        return self.conditioner(self.hidden(lineages, cut_off), cut_off)

    @torch.no_grad()
    def negative(self, lineages: list[dict], cut_off: int, guidance: str) -> torch.Tensor:
        """Guidance branch (docs/method.md §3).

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
    """The trained level in ``model_dir`` on ``model_cfg``'s base model, frozen, in eval mode."""
    config = LevelConfig.load(model_dir)
    base = load_base(model_cfg, device=device)
    base.unet, conditioner = build_level_model(base, config, model_dir)
    move(base.unet, device, dtype).eval().requires_grad_(False)
    conditioner = move(conditioner, device, dtype).eval().requires_grad_(False)
    cache = TextEmbeddingCache(base.text_encoder, base.tokenizer, device=device)
    return TaxaModel(base, conditioner, cache, ModelLevels(config.levels, config.species_text), config)
