"""A trained-level folder ``models/<level>/`` (or ``models/methods/<m>/``): its schema, writer and loader.

The folder holds ``train_config.json`` (:class:`LevelConfig`), ``condition.safetensors`` +
``condition_config.json`` (all level modules, :class:`TaxonomyConditioner`), and, when the level has
them, ``pytorch_lora_weights.safetensors`` (the UNet LoRA, diffusers format) or ``unet/`` (a fully
fine-tuned UNet). The ``sd`` baseline's folder holds ``train_config.json`` alone.

One builder, :func:`build_level_model`, makes the modules a config describes: training (from the parent
level's folder, or new), :func:`taxadiffusion.models.taxa.load_taxa_model` (from the folder itself) and
the test fixtures all go through it, and :func:`write_level` is the one writer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from taxadiffusion.config import SPECIES_TEXTS, ModelConfig, TrainConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_dir, read_json, write_json
from taxadiffusion.models.base import BaseModel
from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner
from taxadiffusion.models.lora import add_lora, load_lora, save_lora
from taxadiffusion.models.train_spec import TrainSpec

TRAIN_CONFIG = "train_config.json"
# TrainConfig fields a run takes from its TrainSpec instead (recorded once, in `spec`).
SPEC_FIELDS = ("steps", "lr_first", "lr")
# TrainConfig fields recorded elsewhere: `species_text` as its own field, the baselines' step budget in `spec`.
OWN_FIELDS = ("species_text", "baseline_budget")
LORA_SEED_OFFSET = 7  # the LoRA's init is seeded with seed + 7, the condition module's with seed


@dataclass(frozen=True, kw_only=True)
class LevelConfig:
    """``train_config.json``: what the folder holds and how it was trained."""

    levels: list  # the params.yaml levels it was trained with, coarse -> fine
    level: str  # the run's name (its level, or methods/<m>)
    level_index: int  # the finest level it draws at (prompt-only baselines: the last)
    parent: str | None  # the level it was trained from
    seed: int  # params.yaml seed of the run (new modules' init, data order, noise)
    spec: TrainSpec | None  # what trained (None: nothing; the `sd` baseline)
    lora_rank: int | None  # None: no LoRA in the folder
    lora_alpha: int | None
    full_unet: bool  # the folder holds a fully fine-tuned unet/
    prompt_only: bool  # conditioned on the species name through the text encoder alone
    species_text: str  # the species level's condition text it was trained with (train.species_text)
    model: ModelConfig  # the base model and condition-module shape
    train: dict | None  # the train section used, less SPEC_FIELDS (None: not trained)

    def __post_init__(self):
        where = f"{TRAIN_CONFIG} of {self.level!r}"
        if not (isinstance(self.levels, list) and self.levels and all(isinstance(x, str) for x in self.levels)):
            raise UserError(f"{where}: levels={self.levels!r}; expected a non-empty list of names")
        if not (isinstance(self.level_index, int) and 0 <= self.level_index < len(self.levels)):
            raise UserError(f"{where}: level_index={self.level_index!r}; expected 0..{len(self.levels) - 1}")
        if (self.lora_rank is None) != (self.lora_alpha is None):
            raise UserError(f"{where}: lora_rank and lora_alpha must both be set or both null")
        if self.spec is None and (self.lora_rank is not None or self.full_unet or self.train is not None):
            raise UserError(f"{where}: an untrained folder (spec null) cannot hold a LoRA, a UNet or a train section")
        if self.species_text not in SPECIES_TEXTS:
            raise UserError(f"{where}: species_text={self.species_text!r}; expected one of {', '.join(SPECIES_TEXTS)}")

    @property
    def has_lora(self) -> bool:
        return self.lora_rank is not None

    @property
    def has_condition_module(self) -> bool:
        """Every trained folder holds its condition module; the `sd` baseline has none."""
        return self.spec is not None

    @classmethod
    def for_run(cls, spec: TrainSpec, cfg: TrainConfig, model_cfg: ModelConfig, levels: list[str], seed: int,
                parent: LevelConfig | None) -> LevelConfig:
        """The config a training run writes. A level inherits its parent's LoRA (and its shape)."""
        if spec.train_lora:
            lora = (cfg.lora_rank, cfg.lora_alpha)
        elif parent is not None and parent.has_lora:
            lora = (parent.lora_rank, parent.lora_alpha)
        else:
            lora = (None, None)
        train = {k: v for k, v in asdict(cfg).items() if k not in SPEC_FIELDS + OWN_FIELDS}
        return cls(
            levels=list(levels), level=spec.name,
            # prompt-only baselines are conditioned on the species name: they draw at the finest level
            level_index=len(levels) - 1 if spec.prompt_only else spec.cut_off,
            parent=spec.parent, seed=seed, spec=spec, lora_rank=lora[0], lora_alpha=lora[1],
            full_unet=spec.full_unet, prompt_only=spec.prompt_only, species_text=cfg.species_text, model=model_cfg,
            train=train,
        )

    @classmethod
    def base_only(cls, name: str, model_cfg: ModelConfig, levels: list[str], seed: int,
                  species_text: str) -> LevelConfig:
        """The `sd` baseline: the base model alone, prompted with the species name."""
        return cls(levels=list(levels), level=name, level_index=len(levels) - 1, parent=None, seed=seed,
                   spec=None, lora_rank=None, lora_alpha=None, full_unet=False, prompt_only=True,
                   species_text=species_text, model=model_cfg, train=None)

    def to_json(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["spec"] = asdict(self.spec) if self.spec is not None else None
        out["model"] = asdict(self.model)
        return out

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TRAIN_CONFIG
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LevelConfig:
        """Read ``<directory>/train_config.json``; missing, malformed or of another schema: one line."""
        path = Path(directory) / TRAIN_CONFIG
        if not path.is_file():
            raise UserError(f"{path}: missing; {directory} is not a trained level (run `dvc repro` first)")
        data = read_json(path)
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            what = ", ".join(f"{label} keys {keys}" for label, keys in (("missing", missing), ("unknown", unknown))
                             if keys)
            raise UserError(f"{path}: {what}; written by another version of the code? re-run `dvc repro`")
        try:
            spec = TrainSpec(**data["spec"]) if data["spec"] is not None else None
            model = ModelConfig(**data["model"])
            return cls(**{**data, "spec": spec, "model": model})
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
        except TypeError as exc:  # a spec/model object with missing or unknown keys
            raise UserError(f"{path}: malformed ({exc})") from None


def check_level_dir(model_dir: str | Path, levels: list[str], cut_off: int) -> LevelConfig:
    """``model_dir`` is a trained level, trained with these ``levels``, and down to level ``cut_off``."""
    config = LevelConfig.load(model_dir)
    if config.levels != list(levels):
        raise UserError(f"{Path(model_dir) / TRAIN_CONFIG}: levels {config.levels} differ from params.yaml "
                        f"levels {list(levels)}")
    if config.level_index < cut_off:
        raise UserError(
            f"{model_dir}: trained down to '{levels[config.level_index]}' only; drawing at level "
            f"'{levels[cut_off]}' needs models/{levels[cut_off]} (or a finer level)"
        )
    return config


def new_conditioner(config: LevelConfig, width: int) -> TaxonomyConditioner:
    """A new condition module, one encoder per level, initialised from ``config.seed``."""
    m = config.model
    torch.manual_seed(config.seed)
    return TaxonomyConditioner(ConditionerConfig(levels=list(config.levels), width=width, num_layers=m.cond_layers,
                                                 num_heads=m.cond_heads, ff_dim=m.cond_ff, dropout=m.cond_dropout))


def build_level_model(base: BaseModel, config: LevelConfig, weights_dir: str | Path | None):
    """``(unet, conditioner)``: the modules ``config`` describes, on top of ``base`` (its UNet is changed).

    ``weights_dir``: a level folder to read the weights from (the folder itself when loading; the parent
    level's when training level k >= 1), or None for new ones (the condition module seeded with
    ``config.seed``, peft's gaussian LoRA init with ``config.seed + 7``; a full UNet starts as the base's).
    """
    unet = base.unet
    if config.has_lora:
        torch.manual_seed(config.seed + LORA_SEED_OFFSET)
        add_lora(unet, config.lora_rank, config.lora_alpha)
        if weights_dir is not None:
            load_lora(unet, weights_dir)
    if config.full_unet and weights_dir is not None:
        unet = UNet2DConditionModel.from_pretrained(Path(weights_dir) / "unet")
    if not config.has_condition_module:  # `sd`: prompt-only, the condition module is never called
        placeholder = dataclasses.replace(config, levels=config.levels[:1], level_index=0,
                                          model=dataclasses.replace(config.model, cond_layers=1))
        return unet, new_conditioner(placeholder, base.text_hidden)
    if weights_dir is not None:
        return unet, TaxonomyConditioner.load(weights_dir)
    return unet, new_conditioner(config, base.text_hidden)


def write_level(out_dir: str | Path, config: LevelConfig, unet, conditioner: TaxonomyConditioner | None) -> Path:
    """Write the whole folder into a temporary one, then swap it in (a killed run leaves the old one)."""
    with atomic_dir(out_dir) as tmp:
        if config.has_condition_module:
            conditioner.save(tmp)
        if config.has_lora:
            save_lora(unet, tmp)
        if config.full_unet:
            unet.save_pretrained(tmp / "unet")
        config.save(tmp)
    return Path(out_dir)
