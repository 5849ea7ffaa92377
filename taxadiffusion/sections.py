"""The params sections of the generation and evaluation side (``generate``, the derived ``SamplingConfig``,
``probe``, ``evaluate``, ``figures``, ``preview``): the same rules as :mod:`taxadiffusion.config`, which builds
and re-exports them (no defaults here; validation in ``__post_init__``; one-line errors naming the key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .checks import bad, check_choice, check_float, check_int, check_list, check_str

SAMPLERS = ("pndm", "ddpm", "ddim", "dpmsolver++")
GUIDANCES = ("taxaguide", "cfg")
DTYPE_NAMES = ("fp32", "bf16", "fp16")
BACKBONES = ("probe", "inception", "vgg", "alex", "lpips", "bioclip")


@dataclass
class GenerateConfig:
    """Mass generation: the Table S2 plan and how it is drawn (the sampler's own settings: ``SamplingConfig``)."""

    sampler: str  # pndm | ddpm | ddim | dpmsolver++
    batch_size: int  # images per sampler call (pixels do not depend on it)
    dtype: str  # fp32 | bf16 | fp16 (GPUs; CPUs sample in fp32)
    guidance: str  # taxaguide | cfg
    guidance_range: list  # [lo, hi]: fraction of the steps that are guided
    target_level: str
    max_species_per_class: int
    images_per_species_capped: int  # classes that hit the cap (paper Table S2: 15)
    images_per_species: int  # other classes (paper: 50)

    def __post_init__(self):
        check_choice("generate.sampler", self.sampler, SAMPLERS)
        check_int("generate.batch_size", self.batch_size, 1)
        check_choice("generate.dtype", self.dtype, DTYPE_NAMES)
        check_choice("generate.guidance", self.guidance, GUIDANCES)
        check_str("generate.target_level", self.target_level)
        check_int("generate.max_species_per_class", self.max_species_per_class, 1)
        check_int("generate.images_per_species_capped", self.images_per_species_capped, 1)
        check_int("generate.images_per_species", self.images_per_species, 1)
        rng = self.guidance_range
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise bad("generate.guidance_range", rng, "[lo, hi] with 0 <= lo <= hi <= 1")
        lo = check_float("generate.guidance_range[0]", rng[0], 0.0, 1.0)
        hi = check_float("generate.guidance_range[1]", rng[1], 0.0, 1.0)
        if lo > hi:
            raise bad("generate.guidance_range", rng, "[lo, hi] with 0 <= lo <= hi <= 1")
        self.guidance_range = [lo, hi]


@dataclass(frozen=True)
class SamplingConfig:
    """Everything the sampler needs, built once from ``params.yaml`` (:attr:`Params.sampling`).

    ``steps`` and ``scale`` are the top-level ``num_inference_steps`` / ``guidance_scale`` (the keys users sweep
    with ``dvc exp run -S``); the rest comes from ``generate``. ``dataclasses.replace`` re-validates overrides.
    """

    sampler: str
    steps: int
    scale: float
    guidance: str
    guidance_range: tuple
    dtype: str

    def __post_init__(self):
        check_choice("generate.sampler", self.sampler, SAMPLERS)
        check_int("num_inference_steps", self.steps, 1)
        object.__setattr__(self, "scale", check_float("guidance_scale", self.scale, 0.0))
        check_choice("generate.guidance", self.guidance, GUIDANCES)
        object.__setattr__(self, "guidance_range", tuple(float(v) for v in self.guidance_range))
        check_choice("generate.dtype", self.dtype, DTYPE_NAMES)


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
    bioclip_model: str  # hf-hub:imageomics/bioclip, /path/ckpt, or local-dir:/path
    bioclip_template: str
    min_images_for_fid: int
    real_split: str  # test | train+test
    batch_size: int
    grid_species: int

    def __post_init__(self):
        for i, name in enumerate(check_list("evaluate.backbones", self.backbones)):
            check_choice(f"evaluate.backbones[{i}]", name, BACKBONES)
        check_str("evaluate.inception_weights", self.inception_weights, optional=True)
        check_choice("evaluate.lpips_net", self.lpips_net, ("vgg", "alex"))
        check_str("evaluate.lpips_weights", self.lpips_weights, optional=True)
        check_str("evaluate.bioclip_model", self.bioclip_model)
        check_str("evaluate.bioclip_template", self.bioclip_template)
        check_int("evaluate.min_images_for_fid", self.min_images_for_fid, 2)
        check_choice("evaluate.real_split", self.real_split, ("test", "train+test"))
        check_int("evaluate.batch_size", self.batch_size, 1)
        check_int("evaluate.grid_species", self.grid_species, 0)


@dataclass
class FiguresConfig:
    """The supplement's Figs. S2, S5 and S6 (docs/figures.md)."""

    embedding_level: str  # Fig. S2: the level whose taxa are embedded
    tsne_perplexity: float  # upper bound; fewer than 3 * p + 1 taxa lower it to (n - 1) / 3
    guidance_scales: list  # Fig. S5 columns (paper: 0, 2, 4, 6, 8, 10)
    guidance_species: int  # Fig. S5 rows (paper: 6)
    real_images: int  # Fig. S5: real training images next to each row
    attention_species: int  # Fig. S6: species of one genus
    tile: int  # pixels per image tile (small images are enlarged, nearest-neighbour)

    def __post_init__(self):
        check_str("figures.embedding_level", self.embedding_level)
        self.tsne_perplexity = check_float("figures.tsne_perplexity", self.tsne_perplexity, 1.0)
        scales = check_list("figures.guidance_scales", self.guidance_scales)
        if not scales:
            raise bad("figures.guidance_scales", scales, "a non-empty list of numbers >= 0")
        self.guidance_scales = [check_float(f"figures.guidance_scales[{i}]", s, 0.0) for i, s in enumerate(scales)]
        check_int("figures.guidance_species", self.guidance_species, 1)
        check_int("figures.real_images", self.real_images, 0)
        check_int("figures.attention_species", self.attention_species, 2)
        check_int("figures.tile", self.tile, 16)


@dataclass
class PreviewConfig:
    """Fixed-seed sample grids written during training (docs/figures.md "Previews")."""

    every: int  # training steps between previews (the last step always gets one); 0: none
    taxa: int  # taxa of the level being trained, one per class in turn
    per_taxon: int  # images per taxon
    sampler: str
    steps: int
    scale: float
    guidance: str

    def __post_init__(self):
        check_int("preview.every", self.every, 0)
        check_int("preview.taxa", self.taxa, 1)
        check_int("preview.per_taxon", self.per_taxon, 1)
        check_choice("preview.sampler", self.sampler, SAMPLERS)
        check_int("preview.steps", self.steps, 1)
        self.scale = check_float("preview.scale", self.scale, 0.0)
        check_choice("preview.guidance", self.guidance, GUIDANCES)

    @property
    def sampling(self) -> SamplingConfig:
        """What the preview is drawn with: every step guided, fp32 (the training weights' dtype)."""
        return SamplingConfig(self.sampler, self.steps, self.scale, self.guidance, (0.0, 1.0), "fp32")
