"""The sampling sections of ``params.yaml``: ``generate``, the derived :class:`SamplingConfig` (the top-level
``guidance_scale`` / ``num_inference_steps`` with ``generate``'s sampler settings), and ``figures``.

No field has a default value (``params.yaml`` is the only source of defaults); each section validates itself in
``__post_init__`` with :mod:`taxadiffusion.config.checks`, against the vocabularies of
:mod:`taxadiffusion.config.vocab`.
"""

from __future__ import annotations

from dataclasses import dataclass

from taxadiffusion.config.checks import bad, check_choice, check_float, check_int, check_list, check_str
from taxadiffusion.config.vocab import DTYPE_NAMES, GUIDANCES, SAMPLERS


@dataclass
class GenerateConfig:
    """Mass generation: the Table S2 plan and how it is drawn (the sampler's own settings: ``SamplingConfig``)."""

    sampler: str  # pndm | ddpm | ddim | dpmsolver++ | unipc
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
