"""The paper's comparison and ablation methods: what each trains, its label, its budget, and the paper's
FishNet numbers (docs/method.md §6).

``methods`` in params.yaml selects them: ``taxadiffusion`` (the main pipeline's own numbers), ``sd`` (the
base model, no fine-tuning, prompted with the species name), ``lora`` (one LoRA stage on the species name),
``full`` (full fine-tuning on the species name), ``joint`` (all levels trained together), ``random_level``
(a random level per step) and ``cfg`` (TaxaDiffusion sampled with vanilla CFG instead of TaxaGuide).
:func:`method_spec` turns a method into the :class:`~taxadiffusion.models.train_spec.TrainSpec` its
``method_train@<m>`` stage runs.
"""

from __future__ import annotations

from taxadiffusion.config import METHOD_NAMES, TrainConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.models.train_spec import TrainSpec

# methods drawn from the main pipeline's final level (`--final`) rather than a model of their own
FROM_FINAL = ("taxadiffusion", "cfg")
METHOD_FILE = "method.json"  # what a method samples from and how long it trained (copied next to its metrics)




# Species-level numbers of the paper on FishNet: FID, LPIPS, BioCLIP (docs/method.md §6; via a
# third-party summary, unverified).
PAPER_FISHNET = {
    "sd": (61.93, 0.7737, 3.35),
    "lora": (43.91, 0.7574, 7.61),
    "full": (39.41, 0.7574, 8.31),
    "taxadiffusion": (31.87, 0.7319, 10.43),
    "joint": (32.43, 0.7487, 9.32),
    "random_level": (29.53, 0.7429, 9.85),
    "cfg": (47.61, 0.7313, 9.45),  # the guidance ablation's vanilla-CFG row
}


LABELS = {
    "sd": "SD (base, zero-shot)",
    "lora": "SD + LoRA",
    "full": "SD + full fine-tuning",
    "taxadiffusion": "TaxaDiffusion (progressive, TaxaGuide)",
    "joint": "Ablation: all levels jointly",
    "random_level": "Ablation: random level per step",
    "cfg": "Ablation: vanilla CFG instead of TaxaGuide",
}


# Supplement Table S1: SD + full fine-tuning trains 100K steps where SD + LoRA and each TaxaDiffusion level train 250K.
PAPER_FULL_STEPS = (100_000, 250_000)


BUDGETS = {
    "equal": "equal compute: every trained baseline gets train.steps x levels, progressive training's total",
    "paper": "the paper's (Table S1): SD+LoRA train.steps, SD+full fine-tuning 100K/250K of it; the ablations "
             "train.steps x levels",
}


def baseline_steps(cfg: TrainConfig, levels: list[str], method: str) -> int:
    """Steps of a trained baseline under ``train.baseline_budget`` (docs/method.md §2 "Budgets").

    ``equal``: ``train.steps`` x number of levels for each. ``paper``: SD+LoRA ``train.steps`` (250K, as one
    level), full fine-tuning ``train.steps`` x 100K/250K (rounded); the paper gives no budget for the
    ablations (joint, random level), so they keep progressive training's total under both.
    """
    if cfg.baseline_budget == "equal" or method not in ("lora", "full"):
        return cfg.steps * len(levels)
    if method == "lora":
        return cfg.steps
    num, den = PAPER_FULL_STEPS
    return max(1, (cfg.steps * num + den // 2) // den)


def check_method(method: str) -> str:
    """A method named on a stage's command line (``--method``; ``params.yaml methods`` is checked when read)."""
    if method not in METHOD_NAMES:
        raise UserError(f"--method {method!r}: expected one of {', '.join(METHOD_NAMES)}")
    return method


def method_spec(cfg: TrainConfig, levels: list[str], method: str) -> TrainSpec | None:
    """Baselines and ablations of the paper's comparison tables (None: nothing to train).

    Steps: :func:`baseline_steps` (``train.baseline_budget``). ``sd`` = the base model, no fine-tuning;
    ``taxadiffusion`` = the main pipeline; ``cfg`` = the TaxaDiffusion model sampled with vanilla CFG
    (generation-side only).
    """
    if method in ("taxadiffusion", "sd", "cfg"):
        return None
    every = tuple(range(len(levels)))
    last = len(levels) - 1
    common = dict(name=f"methods/{method}", parent=None, random_cut_off=False,
                  steps=baseline_steps(cfg, levels, method))
    if method == "lora":  # SD + LoRA on the species name (supplement Table S1: lr 1e-4)
        return TrainSpec(**common, cut_off=0, train_levels=(), train_lora=True, full_unet=False, prompt_only=True,
                         lr=cfg.lr_first)
    if method == "full":  # SD + full fine-tuning on the species name (Table S1: lr 1e-5)
        return TrainSpec(**common, cut_off=0, train_levels=(), train_lora=False, full_unet=True, prompt_only=True,
                         lr=cfg.lr)
    if method == "joint":  # all level modules + LoRA together, full lineage
        return TrainSpec(**common, cut_off=last, train_levels=every, train_lora=True, full_unet=False,
                         prompt_only=False, lr=cfg.lr_first)
    # random_level: all modules + LoRA, a random cut-off level per step
    return TrainSpec(**{**common, "random_cut_off": True}, cut_off=last, train_levels=every, train_lora=True,
                     full_unet=False, prompt_only=False, lr=cfg.lr_first)
