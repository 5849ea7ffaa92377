"""Stage ``method@<m>``: generate and evaluate one comparison or ablation row with the main pipeline's code.

``methods`` in params.yaml selects the rows (:mod:`taxadiffusion.comparison.methods`); this module draws a
method's images with :func:`taxadiffusion.sampling.generate.generate` and scores them with
:func:`taxadiffusion.metrics.evaluate.evaluate` (``taxadiffusion`` copies the main pipeline's summary).
``compare`` (:mod:`taxadiffusion.comparison.table`) then writes one row per method. Every path comes from the
stage's arguments (dvc.yaml).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from taxadiffusion.comparison.methods import METHOD_FILE, check_method
from taxadiffusion.config import EvaluateConfig, Experiment, GenerateConfig, SamplingConfig
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import read_json, write_json


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


def sample_method(method: str, generate_cfg: GenerateConfig, sampling: SamplingConfig, evaluate_cfg: EvaluateConfig,
                  exp: Experiment, paths: SamplePaths) -> dict:
    """Stage ``method@<m>``: generate with the method's model and evaluate into ``paths.out``.

    Baselines and ablations draw at the finest level (their models are conditioned on the species);
    ``cfg`` is the main pipeline's model and target level, sampled with vanilla CFG.
    """
    check_method(method)
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
        generate_cfg = dataclasses.replace(generate_cfg, target_level=exp.levels[-1])
    from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate
    from taxadiffusion.sampling.generate import generate

    generate(generate_cfg, sampling, exp, model_dir, paths.prepared, paths.images)
    eval_paths = EvaluatePaths(shards=paths.shards, generated=paths.images, probe=paths.probe, out=paths.out,
                               cache=paths.cache)
    summary = evaluate(evaluate_cfg, exp.levels, eval_paths)
    write_json(paths.out / METHOD_FILE, info)
    return summary
