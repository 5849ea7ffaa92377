"""The paper's comparison and ablation tables, run by the same code as the main pipeline.

``methods`` in params.yaml selects them: ``taxadiffusion`` (the main pipeline's own numbers), ``sd`` (the
base model, no fine-tuning, prompted with the species name), ``lora`` (one LoRA stage on the species name),
``full`` (full fine-tuning on the species name), ``joint`` (all levels trained together), ``random_level``
(a random level per step) and ``cfg`` (TaxaDiffusion sampled with vanilla CFG instead of TaxaGuide); what
each trains: :func:`taxadiffusion.specs.method_spec`. Stage ``method_train@<m>`` trains a method's model,
``method@<m>`` generates and evaluates with it, ``compare`` (:mod:`taxadiffusion.comparison`) writes one
row per method. Every path comes
from the stage's arguments (dvc.yaml).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from .config import EvaluateConfig, GenerateConfig, ModelConfig, SamplingConfig, TrainConfig
from .errors import UserError
from .files import read_json, write_json
from .specs import LABELS, METHOD_FILE, check_methods, method_spec

# Training, generation and evaluation (torch, diffusers: ~10 s of imports) are imported where a method uses
# them: the rows without a model of their own (taxadiffusion, cfg's training) are a JSON file each.

# methods drawn from the main pipeline's final level (`--final`) rather than a model of their own
FROM_FINAL = ("taxadiffusion", "cfg")


def train_method(method: str, cfg: TrainConfig, *, model_cfg: ModelConfig, levels: list[str], seed: int,
                 out_dir: str | Path, shards: str | Path, latents_dir: str | Path, scratch: str | Path,
                 log_dir: str | Path) -> Path:
    """Stage ``method_train@<m>``: train the method's model into ``out_dir``.

    Methods without training of their own still get a folder with ``method.json`` (what they sample
    from), so every ``method_train@<m>`` has the same declared output.
    """
    check_methods([method])
    out_dir = Path(out_dir)
    spec = method_spec(cfg, levels, method)
    if spec is not None:
        from .training import train

        train(cfg, spec, model_cfg=model_cfg, levels=levels, seed=seed, parent_dir=None, out_dir=out_dir,
              shards=shards, latents_dir=latents_dir, scratch=scratch, log_dir=log_dir,
              preview=None)  # previews: the train@<level> stages only (README "Previews")
    elif method == "sd":  # the base model alone, prompted with the species name
        from .models.level import LevelConfig, write_level

        write_level(out_dir, LevelConfig.base_only(f"methods/{method}", model_cfg, levels, seed, cfg.species_text),
                    None, None)
    samples_from = "the main pipeline's final level" if method in FROM_FINAL else str(out_dir)
    steps = spec.steps if spec is not None else (0 if method == "sd" else cfg.steps * len(levels))
    write_json(out_dir / METHOD_FILE, {
        "method": method, "description": LABELS[method], "samples_from": samples_from, "train_steps": steps,
        # the protocol that set a trained baseline's steps (train.baseline_budget); the others have none
        "budget": cfg.baseline_budget if spec is not None else None,
    })
    return out_dir


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplePaths:
    """The folders ``method@<m>`` reads and writes (stage arguments)."""

    model: Path  # the method's own model (method_train@<m>)
    final: Path  # the main pipeline's final level (taxadiffusion, cfg)
    prepared: Path
    shards: Path
    probe: Path
    main_summary: Path  # the main pipeline's metrics/summary.json (the taxadiffusion row)
    cache: Path  # real-image feature cache
    images: Path  # generated images
    out: Path  # metrics/methods/<m>


def sample_method(method: str, *, generate_cfg: GenerateConfig, sampling: SamplingConfig, evaluate_cfg: EvaluateConfig,
                  model_cfg: ModelConfig, levels: list[str], seed: int, paths: SamplePaths) -> dict:
    """Stage ``method@<m>``: generate with the method's model and evaluate into ``paths.out``.

    Baselines and ablations draw at the finest level (their models are conditioned on the species);
    ``cfg`` is the main pipeline's model and target level, sampled with vanilla CFG.
    """
    check_methods([method])
    if not (paths.model / METHOD_FILE).is_file():
        raise UserError(f"{paths.model / METHOD_FILE}: missing; run `dvc repro method_train@{method}` first")
    info = read_json(paths.model / METHOD_FILE)  # its steps and budget, for compare
    if method == "taxadiffusion":  # the main pipeline's own generation and evaluation
        if not paths.main_summary.is_file():
            raise UserError(f"{paths.main_summary}: missing; run `dvc repro evaluate` first")
        summary = read_json(paths.main_summary)
        write_json(paths.images / "method.json", {"images": "the main pipeline's (stage generate)"})
        write_json(paths.out / "summary.json", summary)
        write_json(paths.out / METHOD_FILE, info)
        return summary
    if method == "cfg":
        model_dir = paths.final
        generate_cfg = dataclasses.replace(generate_cfg, guidance="cfg")
        sampling = dataclasses.replace(sampling, guidance="cfg")
    else:
        model_dir = paths.model
        generate_cfg = dataclasses.replace(generate_cfg, target_level=levels[-1])
    from .generation import generate
    from .metrics.evaluate import evaluate

    generate(generate_cfg, sampling, model_cfg, levels, seed, model_dir, paths.prepared, paths.images)
    summary = evaluate(evaluate_cfg, levels, paths.shards, paths.images, paths.probe, paths.out, paths.cache)
    write_json(paths.out / METHOD_FILE, info)
    return summary
