"""Every allowed-value list of ``params.yaml``, each defined once and validated once (in its section's
``__post_init__``); code that needs a vocabulary imports it from :mod:`taxadiffusion.config`.
"""

from __future__ import annotations

# data
DATASETS = ("synthetic", "fishnet", "bioscan1m", "inat2021", "table")
PREPROCESS = ("center_crop", "resize", "pad_white")
CHECK_IMAGES = ("none", "header", "decode")
# Linnaean ranks coarse -> fine: `levels` naming any of them must list them in this order (a list written
# fine -> coarse is accepted by the data, but makes most rows inconsistent_lineage)
RANK_ORDER = ("domain", "superkingdom", "kingdom", "subkingdom", "superphylum", "phylum", "subphylum", "superclass",
              "class", "subclass", "infraclass", "superorder", "order", "suborder", "infraorder", "superfamily",
              "family", "subfamily", "tribe", "subtribe", "genus", "subgenus", "species", "subspecies")
# model and training
PRESETS = ("tiny", "sd15")
MIXED_PRECISION = ("no", "bf16", "fp16")
NOISE_SCHEDULES = ("base", "scaled_linear", "linear", "squaredcos_cap_v2")
SPECIES_TEXTS = ("as_written", "epithet")  # the species level's condition text (docs/method.md §1.2)
# comparison rows (docs/method.md §6) and the trained baselines' step budgets (docs/method.md §2 "Budgets")
METHOD_NAMES = ("taxadiffusion", "sd", "lora", "full", "joint", "random_level", "cfg")
BASELINE_BUDGETS = ("equal", "paper")
# sampling and evaluation
SAMPLERS = ("pndm", "ddpm", "ddim", "dpmsolver++", "unipc")
GUIDANCES = ("taxaguide", "cfg")
DTYPE_NAMES = ("fp32", "bf16", "fp16")
BACKBONES = ("probe", "inception", "vgg", "alex", "lpips", "bioclip")
EVAL_PROTOCOLS = ("heldout", "authors")  # what evaluate compares with what (docs/method.md §5 "Two protocols")
BIOCLIP_PROMPTS = ("tree_of_life", "template")  # BioCLIP zero-shot prompts (docs/method.md §5 "BioCLIP zero-shot")
