"""The evaluation sections of ``params.yaml``: ``probe`` and ``evaluate``.

No field has a default value (``params.yaml`` is the only source of defaults); each section validates itself in
``__post_init__`` with :mod:`taxadiffusion.config.checks`, against the vocabularies of
:mod:`taxadiffusion.config.vocab`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from taxadiffusion.config.checks import bad, check_choice, check_float, check_int, check_list, check_str
from taxadiffusion.config.vocab import BACKBONES, BIOCLIP_PROMPTS, EVAL_PROTOCOLS

# Names evaluate.group_level cannot take: metrics/<it>/ or metrics/<it>_metrics.* would be another stage's output
# (train logs, methods) or another table of evaluate (level_metrics.*, rarity_metrics.*, plots/).
GROUP_LEVEL_TAKEN = ("level", "rarity", "plots", "train", "methods")


@dataclass
class ProbeConfig:
    """The always-available metric backbone: a small classifier of the real train split. Seeded by ``seed``."""

    steps: int
    batch_size: int
    lr: float
    width: int

    def __post_init__(self):
        check_int("probe.steps", self.steps, 1)
        check_int("probe.batch_size", self.batch_size, 1)
        self.lr = check_float("probe.lr", self.lr, 0.0, lo_open=True)
        check_int("probe.width", self.width, 1)


@dataclass
class EvaluateConfig:
    backbones: list  # probe | inception | vgg | alex | bioclip
    inception_weights: Optional[str]  # local torch-fidelity Inception weights (offline)
    lpips_net: str  # vgg | alex
    lpips_weights: Optional[str]  # local torchvision backbone weights
    diversity_pairs: int  # within-species pairs per class and side (seeded sample when there are more); 0: none
    bioclip_model: str  # hf-hub:imageomics/bioclip, /path/ckpt, or local-dir:/path
    bioclip_template: str
    bioclip_zeroshot_prompt: str  # tree_of_life | template (the zero-shot accuracy's prompts)
    min_images_for_fid: int
    real_split: str  # test | train+test
    protocol: str  # heldout | authors (the co-author's scripts: every real image, 512 px stretch, their pairs)
    batch_size: int
    grid_species: int
    seed: int  # the draws below (KID subsets, FID subsets, the floor's real sample)
    kid_subsets: int
    kid_subset_size: int  # capped at min(n_real, n_generated)
    fid_subsets: int
    fid_subset_fraction: float  # in (0, 1]
    prdc_k: int  # k of precision / recall / density / coverage
    group_level: str  # the level whose taxa are the per-group table's rows (Table S2: class); Params checks it

    def __post_init__(self):
        for i, name in enumerate(check_list("evaluate.backbones", self.backbones)):
            check_choice(f"evaluate.backbones[{i}]", name, BACKBONES)
        check_str("evaluate.inception_weights", self.inception_weights, optional=True)
        check_choice("evaluate.lpips_net", self.lpips_net, ("vgg", "alex"))
        check_str("evaluate.lpips_weights", self.lpips_weights, optional=True)
        check_int("evaluate.diversity_pairs", self.diversity_pairs, 0)
        check_str("evaluate.bioclip_model", self.bioclip_model)
        check_str("evaluate.bioclip_template", self.bioclip_template)
        check_choice("evaluate.bioclip_zeroshot_prompt", self.bioclip_zeroshot_prompt, BIOCLIP_PROMPTS)
        check_int("evaluate.min_images_for_fid", self.min_images_for_fid, 2)
        check_choice("evaluate.real_split", self.real_split, ("test", "train+test"))
        check_choice("evaluate.protocol", self.protocol, EVAL_PROTOCOLS)
        check_int("evaluate.batch_size", self.batch_size, 1)
        check_int("evaluate.grid_species", self.grid_species, 0)
        check_int("evaluate.seed", self.seed, 0)
        check_int("evaluate.kid_subsets", self.kid_subsets, 1)
        check_int("evaluate.kid_subset_size", self.kid_subset_size, 2)
        check_int("evaluate.fid_subsets", self.fid_subsets, 1)
        self.fid_subset_fraction = check_float("evaluate.fid_subset_fraction", self.fid_subset_fraction, 0.0, 1.0,
                                               lo_open=True)
        check_int("evaluate.prdc_k", self.prdc_k, 1)
        # metrics/<group_level>/ and metrics/<group_level>_metrics.* sit next to the other outputs in metrics/
        if check_str("evaluate.group_level", self.group_level) in GROUP_LEVEL_TAKEN:
            raise bad("evaluate.group_level", self.group_level,
                      f"a level whose name no other output in metrics/ uses (not one of {list(GROUP_LEVEL_TAKEN)})")
