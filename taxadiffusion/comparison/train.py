"""Stage ``method_train@<m>``: train one comparison or ablation method's model (docs/method.md §6).

What each method trains is :func:`taxadiffusion.comparison.methods.method_spec`; the training itself is the
main pipeline's :func:`taxadiffusion.training.train.train`. Methods without training of their own
(``taxadiffusion``, ``sd``, ``cfg``) get only ``method.json``. Every path comes from the stage's arguments
(dvc.yaml).
"""

from __future__ import annotations

from pathlib import Path

from taxadiffusion.comparison.methods import FROM_FINAL, LABELS, METHOD_FILE, check_method, method_spec
from taxadiffusion.config import ComputeConfig, Experiment, TrainConfig
from taxadiffusion.core.files import write_json
from taxadiffusion.core.launch import is_main_worker
from taxadiffusion.training.train import TrainPaths, train


def train_method(method: str, cfg: TrainConfig, exp: Experiment, paths: TrainPaths, compute: ComputeConfig) -> Path:
    """Stage ``method_train@<m>``: train the method's model into ``paths.out`` (``paths.parent`` is None: every
    method starts from the base model). ``compute``: how it runs (processes, micro-batch, logging).

    Methods without training of their own still get a folder with ``method.json`` (what they sample
    from), so every ``method_train@<m>`` has the same declared output.
    """
    check_method(method)
    out_dir, levels = paths.out, exp.levels
    spec = method_spec(cfg, levels, method)
    if spec is not None:
        # previews: the train@<level> stages only (README "Previews")
        train(cfg, spec, exp, paths, compute, preview=None)
    if not is_main_worker():  # what follows is written once, by rank 0
        return out_dir
    if method == "sd":  # the base model alone, prompted with the species name
        from taxadiffusion.models.level import LevelConfig, write_level

        write_level(out_dir, LevelConfig.base_only(f"methods/{method}", exp.model, levels, exp.seed, cfg.species_text),
                    None, None)
    samples_from = "the main pipeline's final level" if method in FROM_FINAL else str(out_dir)
    steps = spec.steps if spec is not None else (0 if method == "sd" else cfg.steps * len(levels))
    write_json(out_dir / METHOD_FILE, {
        "method": method, "description": LABELS[method], "samples_from": samples_from, "train_steps": steps,
        # the protocol that set a trained baseline's steps (train.baseline_budget); the others have none
        "budget": cfg.baseline_budget if spec is not None else None,
    })
    return out_dir
