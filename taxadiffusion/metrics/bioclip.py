"""BioCLIP score: mean over generated images of 100 * cos(image embedding, text embedding of its taxon).

Protocol from the co-author's scripts (docs/method.md §5 [EVAL:bioclip_level_wise.py]): open_clip
``hf-hub:imageomics/bioclip`` (BioCLIP v1), ``preprocess_val`` (224 px), score per image 100·cos, then the mean
over images (no clamp). The text is the space-joined taxonomic lineage, the format BioCLIP was trained on
(Tree-of-Life names, docs/method.md §5.1); a binomial species name that repeats its genus contributes only its
epithet ("... Diplodus sargus", not "... Diplodus Diplodus sargus"); a taxon drawn at a coarser
``generate.target_level`` stops at that level (the ``"None"`` names below it are no words).
``evaluate.bioclip_template`` wraps it, e.g. "a photo of {lineage}." (level names are placeholders too: "{species}").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from taxadiffusion.core.device import default_device
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.lineage import NONE
from taxadiffusion.metrics.backbones import LOAD_ERRORS, one_line

log = logging.getLogger(__name__)

V1_ARCH = "ViT-B-16"  # BioCLIP v1's open_clip architecture, for a bare checkpoint file


def backbone_name(model_id: str) -> str:
    return "bioclip-2" if "bioclip-2" in model_id.lower() else "bioclip-v1"


def named(name) -> bool:
    """A name the lineage gives: not empty and not ``"None"``, the word ``generate`` writes below the drawn level
    (``generate.target_level`` coarser than the finest level; docs/architecture.md ``generate``)."""
    return bool(name) and name != NONE


def lineage_words(lineage: Sequence[str]) -> list[str]:
    """Names coarse -> fine down to the drawn level, missing ones dropped, a child repeating its parent's name as
    prefix shortened."""
    words: list[str] = []
    prev = ""
    for name in lineage:
        if not named(name):
            continue
        words.append(name[len(prev) + 1 :] if prev and name.startswith(prev + " ") else name)
        prev = name
    return words


def lineage_prompt(template: str, lineage: Sequence[str], levels: Sequence[str]) -> str:
    fields = {lv: (lineage[k] if k < len(lineage) and named(lineage[k]) else "") for k, lv in enumerate(levels)}
    try:
        return template.format(lineage=" ".join(lineage_words(lineage)), **fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(
            f"evaluate.bioclip_template: '{template}' cannot be filled ({one_line(exc)}); "
            f"use {{lineage}} or level names {list(levels)}"
        ) from None


class BioCLIPScorer:
    def __init__(self, model_id: str, template: str, levels: Sequence[str], param: str = "evaluate.bioclip_model"):
        import open_clip

        name, pretrained = resolve_model(model_id, param)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained)
            self.tokenizer = open_clip.get_tokenizer(name)
        except (*LOAD_ERRORS, ImportError) as exc:
            hint = "download it (hf download imageomics/bioclip) or " if name.startswith("hf-hub:") else ""
            raise UserError(
                f"{param}: cannot load BioCLIP '{model_id}' ({one_line(exc)}); "
                f"{hint}set {param}=local-dir:/path/to/bioclip "
                "(a folder with open_clip_config.json and open_clip_model.safetensors)"
            ) from None
        self.device = default_device()
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.preprocess = preprocess
        self.template = template
        self.levels = list(levels)
        self.name = backbone_name(model_id)
        lineage_example = ["Chondrichthyes", "Carcharhiniformes", "Carcharhinidae", "Carcharhinus",
                           "Carcharhinus leucas"]
        self.info = {
            "metric": "BioCLIP score",
            "impl": f"open_clip {open_clip.__version__}, 100 * cos(image, text), mean over generated images (no clamp)",
            "model": model_id,
            "prompt": template.replace("{lineage}", "{space-joined lineage, coarse -> fine}"),
            "prompt_example": lineage_prompt(template, lineage_example[: len(self.levels)], self.levels),
            "preprocess": "open_clip preprocess_val",
        }

    @torch.no_grad()
    def image_embeddings(self, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        from PIL import Image

        out = []
        for start in range(0, len(images), batch_size):
            x = torch.stack([self.preprocess(Image.fromarray(a)) for a in images[start : start + batch_size]])
            out.append(torch.nn.functional.normalize(self.model.encode_image(x.to(self.device)).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 1)

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str], batch_size: int = 256) -> dict[str, torch.Tensor]:
        unique = sorted(set(prompts))
        out = {}
        for start in range(0, len(unique), batch_size):
            chunk = unique[start : start + batch_size]
            tokens = self.tokenizer(chunk).to(self.device)
            emb = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()
            out.update(zip(chunk, emb))
        return out

    def scores(self, image_emb: torch.Tensor, lineages: Sequence[Sequence[str]],
               depth: int | None = None) -> np.ndarray:
        """Per image 100 * cos with the prompt of its lineage truncated to ``depth`` levels (all by default)."""
        prompts = [lineage_prompt(self.template, list(lin)[: depth or len(lin)], self.levels) for lin in lineages]
        text = self.text_embeddings(prompts)
        if not prompts:
            return np.zeros(0)
        t = torch.stack([text[p] for p in prompts])
        return (100.0 * (image_emb * t).sum(-1)).double().numpy()


def resolve_model(model_id: str, param: str) -> tuple[str, str | None]:
    """open_clip's (model name, pretrained file) for ``evaluate.bioclip_model`` (``hf-hub:...``, ``local-dir:...``
    or a checkpoint path): the one rule, used by the scorer and by ``preflight``."""
    if model_id.startswith("hf-hub:"):
        return model_id, None
    path = Path(model_id[len("local-dir:") :] if model_id.startswith("local-dir:") else model_id)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise UserError(f"{param}: {path} has no open_clip_config.json "
                            "(expected an open_clip local-dir model folder)")
        return f"local-dir:{path}", None
    if path.is_file() and not model_id.startswith("local-dir:"):
        return V1_ARCH, str(path)  # a bare BioCLIP v1 checkpoint (.pt / .bin / .safetensors)
    raise UserError(
        f"{param}: '{model_id}' not found; set {param}=hf-hub:imageomics/bioclip, local-dir:/path/to/folder "
        "or /path/to/checkpoint"
    )
