"""The taxonomy condition module (docs/method.md §1.2, official ``models/taxonomy.py``).

Each level's text ``"<level>: <name>"`` is embedded by the frozen text encoder (``[B, L, T, D]``); level
``i`` has its own ``nn.TransformerEncoder`` (post-norm, ReLU, PyTorch defaults as the official code), and
the outputs of levels ``0..cut_off`` are **summed** into the UNet's cross-attention context ``[B, T, D]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from taxadiffusion.config import SPECIES_TEXTS
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_path, read_json, write_json

AS_WRITTEN, EPITHET = SPECIES_TEXTS
CONDITION_FILE = "condition.safetensors"
CONDITION_CONFIG = "condition_config.json"
SPECIES_KEY = "specific_epithet"  # the official code's key for the species level (docs/method.md §1.2)


@dataclass
class ConditionerConfig:
    """The condition module's shape: built from ``params.yaml`` ``model.cond_*`` (no defaults here) or read back
    from a trained level's ``condition_config.json``."""

    levels: list
    width: int  # = text encoder hidden size
    num_layers: int  # model.cond_layers
    num_heads: int  # model.cond_heads
    ff_dim: int  # model.cond_ff
    dropout: float  # model.cond_dropout

    def __post_init__(self):
        if self.num_heads < 1 or self.width % self.num_heads:
            raise UserError(f"params.yaml model.cond_heads={self.num_heads}: must divide the text encoder's width "
                            f"{self.width} (attention heads split it evenly), e.g. "
                            f"{', '.join(str(h) for h in range(1, 17) if self.width % h == 0)}")


class TaxonomyConditioner(nn.Module):
    """One TransformerEncoder per taxonomic level; outputs of levels 0..cut_off are summed."""

    def __init__(self, config: ConditionerConfig):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList(
            nn.TransformerEncoder(
                nn.TransformerEncoderLayer(
                    d_model=config.width,
                    nhead=config.num_heads,
                    dim_feedforward=config.ff_dim,
                    dropout=config.dropout,
                    batch_first=True,
                ),
                num_layers=config.num_layers,
                enable_nested_tensor=False,
            )
            for _ in config.levels
        )

    @property
    def num_levels(self) -> int:
        return len(self.encoders)

    def forward(self, hidden: torch.Tensor, cut_off: int) -> torch.Tensor:
        """``hidden``: ``[B, L, T, D]`` text-encoder states per level -> ``[B, T, D]``."""
        cut_off = min(int(cut_off), self.num_levels - 1)
        out = self.encoders[0](hidden[:, 0])
        for i in range(1, cut_off + 1):
            out = out + self.encoders[i](hidden[:, i])
        return out

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(directory / CONDITION_FILE) as tmp:
            save_file(state, str(tmp))
        write_json(directory / CONDITION_CONFIG, asdict(self.config))

    @classmethod
    def load(cls, directory: str | Path) -> "TaxonomyConditioner":
        directory = Path(directory)
        config = ConditionerConfig(**read_json(directory / CONDITION_CONFIG))
        module = cls(config)
        module.load_state_dict(load_file(str(directory / CONDITION_FILE)))
        return module


def level_key(level: str) -> str:
    return SPECIES_KEY if level == "species" else level.lower()


class ModelLevels(list):
    """A model's level names (coarse -> fine) that also carry the species text it was trained with
    (``train.species_text``, recorded in its ``train_config.json``), so every caller that builds texts from
    ``model.levels`` writes the text the model was trained on (docs/method.md §1.2)."""

    def __init__(self, names, species_text: str):
        super().__init__(names)
        self.species_text = _checked(species_text)


def _checked(species_text) -> str:
    if species_text not in SPECIES_TEXTS:
        raise TypeError(f"species_text={species_text!r}: expected one of {', '.join(SPECIES_TEXTS)} "
                        "(train.species_text)")
    return species_text


def _species_text(levels, species_text: str | None) -> str:
    """``species_text`` if given, else the one ``levels`` carries (:class:`ModelLevels`); never a silent default."""
    if species_text is None:
        species_text = getattr(levels, "species_text", None)
    return _checked(species_text)


def level_text(level: str, name: str | None, lineage: dict | None = None, species_text: str | None = None) -> str:
    """The per-level text ``"<level>: <name>"``; a missing name is the literal ``None`` (no null token).

    The species level uses the official key ``specific_epithet`` and, by ``species_text`` (docs/method.md §1.2):
    ``as_written``, the species name as the table writes it (FishNet / BIOSCAN: the binomial,
    "specific_epithet: Scorpaenopsis obtusa"); ``epithet``, the epithet alone when the name is a binomial that
    starts with its genus (the official iNat text, "specific_epithet: obtusa").
    """
    if name is None or (isinstance(name, float)) or str(name).strip() == "":
        return f"{level_key(level)}: None"
    name = str(name)
    if level == "species" and _checked(species_text) == EPITHET:
        genus = (lineage or {}).get("genus")
        parts = name.split(" ", 1)
        if len(parts) == 2 and (genus is None or parts[0] == genus):
            name = parts[1]
    return f"{level_key(level)}: {name}"


def lineage_texts(levels: list[str], lineage: dict, cut_off: int | None = None,
                  species_text: str | None = None) -> list[str]:
    """Texts for every level; levels below ``cut_off`` become ``None`` (docs/method.md §3, generation loop).

    ``species_text``: ``as_written`` | ``epithet`` (:func:`level_text`); may be left out only when ``levels`` is
    a model's :class:`ModelLevels`, which carries it.
    """
    species_text = _species_text(levels, species_text)
    texts = []
    for i, level in enumerate(levels):
        name = lineage.get(level) if (cut_off is None or i <= cut_off) else None
        texts.append(level_text(level, name, lineage, species_text))
    return texts


def species_prompt(lineage: dict, levels: list[str]) -> str:
    """The baselines' prompt (SD, SD+LoRA, SD+full): the name of the finest known level alone, as written.

    The species is the binomial whatever ``train.species_text`` says: a prompt to the plain text encoder must
    name the species, and an epithet alone ("vulgaris") names none (docs/deviations.md, "Baseline prompts").
    """
    for level in reversed(levels):
        name = lineage.get(level)
        if name is not None and str(name).strip():
            return str(name)
    return ""
