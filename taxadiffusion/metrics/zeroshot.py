"""BioCLIP zero-shot accuracy per level, closed-set over the dataset's own species (docs/method.md §5 "BioCLIP
zero-shot").

The candidates are every species (complete lineage) of the shards: the train split's lineages and those of the
real reference images. Each candidate's prompt is its lineage in ``evaluate.bioclip_zeroshot_prompt``'s style:
``tree_of_life`` (default), BioCLIP's Tree-of-Life training text, ``"a photo of <class> <order> <family> <genus>
<epithet>."`` (:data:`TREE_OF_LIFE`), or ``template``, the BioCLIP score's own ``evaluate.bioclip_template``. An
image's species probabilities are the softmax of BioCLIP's logits (``logit_scale.exp() * cos``) over the candidates;
a coarser level's probabilities are the sums over the species of each taxon of that level, as pybioclip's
``TreeOfLifeClassifier`` groups its predictions above species. Top-1 / top-5: the image's own taxon at that level is
the most probable / among the five most probable (every taxon counts when a level has five or fewer).

An image is judged against the taxon it was drawn for (a real test image: its own lineage), down to its drawn level
only; a taxon that is not among the candidates (or a level below the drawn one) is not scored at that level.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from taxadiffusion.metrics.bioclip import lineage_prompt, named
from taxadiffusion.metrics.rarity import drawn_taxon

TREE_OF_LIFE = "a photo of {lineage}."
TOP_K = 5
CHUNK = 256  # images per softmax over the candidates (memory: CHUNK x species)


def candidates(lineages: Iterable[Sequence[str]], n_levels: int) -> list[tuple]:
    """The complete lineages (every level named) among ``lineages``, sorted and unique."""
    return sorted({tuple(lin) for lin in lineages if len(lin) == n_levels and all(named(n) for n in lin)})


class ZeroShot:
    """BioCLIP (a :class:`~taxadiffusion.metrics.bioclip.BioCLIPScorer`) as a classifier over ``species``."""

    def __init__(self, scorer, species: list[tuple], style: str, levels: Sequence[str]):
        self.levels = list(levels)
        self.species = list(species)
        template = TREE_OF_LIFE if style == "tree_of_life" else scorer.template
        prompts = [lineage_prompt(template, lin, self.levels) for lin in self.species]
        text = scorer.text_embeddings(prompts)
        self.text = torch.stack([text[p] for p in prompts]) if prompts else torch.zeros(0, 1)
        self.scale = float(scorer.model.logit_scale.exp()) if hasattr(scorer.model, "logit_scale") else 100.0
        # per level: taxon (lineage prefix) -> group index, and each species' group
        self.groups = []
        for k in range(len(self.levels)):
            taxa = sorted({lin[: k + 1] for lin in self.species})
            lookup = {t: g for g, t in enumerate(taxa)}
            self.groups.append((lookup, torch.tensor([lookup[lin[: k + 1]] for lin in self.species])))
        self.info = {"metric": "BioCLIP zero-shot top-1 / top-5 per level",
                     "candidates": f"{len(self.species)} species of the shards (train + reference lineages)",
                     "prompt": style, "prompt_example": prompts[0] if prompts else None,
                     "probabilities": "softmax(logit_scale * cos) over the species; summed per taxon above species "
                                      "(pybioclip grouped predictions)"}

    def hits(self, image_emb: torch.Tensor, lineages: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """``(top1, top5)``, each ``[N, levels]`` int8: 1 hit, 0 miss, -1 not scored (module docstring)."""
        n, n_levels = len(lineages), len(self.levels)
        top1, top5 = np.full((n, n_levels), -1, np.int8), np.full((n, n_levels), -1, np.int8)
        if not len(self.species):
            return top1, top5
        taxa = [drawn_taxon(tuple(lin)) for lin in lineages]
        for start in range(0, n, CHUNK):
            emb = image_emb[start : start + CHUNK].float()
            probs = torch.softmax(self.scale * emb @ self.text.T, dim=1)
            for k, (lookup, group) in enumerate(self.groups):
                grouped = torch.zeros(len(emb), len(lookup)).index_add_(1, group, probs)
                best = grouped.topk(min(TOP_K, len(lookup)), dim=1).indices.numpy()
                for row, taxon in enumerate(taxa[start : start + CHUNK]):
                    target = lookup.get(taxon[: k + 1]) if len(taxon) > k else None
                    if target is not None:
                        top1[start + row, k] = best[row, 0] == target
                        top5[start + row, k] = target in best[row]
        return top1, top5



def attach(inp) -> None:
    """``inp.bb.zeroshot`` (an :class:`~taxadiffusion.metrics.inputs.Inputs`'s backbones) when BioCLIP runs: the
    classifier over the shards' species, built once their lineages are read."""
    if inp.bb.bioclip is None:
        return
    n_levels = len(inp.levels)
    lineages = [t for t in inp.n_train if len(t) == n_levels] + list(inp.real.lineages)
    inp.bb.zeroshot = ZeroShot(inp.bb.bioclip, candidates(lineages, n_levels), inp.cfg.bioclip_zeroshot_prompt,
                               inp.levels)
    inp.bb.bioclip.info["zeroshot"] = inp.bb.zeroshot.info
