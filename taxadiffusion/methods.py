"""The paper's comparison and ablation tables, run by the same code as the main pipeline.

``methods`` in params.yaml selects them: ``taxadiffusion`` (the main pipeline's own numbers), ``sd`` (the
base model, no fine-tuning, prompted with the species name), ``lora`` (one LoRA stage on the species name),
``full`` (full fine-tuning on the species name), ``joint`` (all levels trained together), ``random_level``
(a random level per step) and ``cfg`` (TaxaDiffusion sampled with vanilla CFG instead of TaxaGuide); what
each trains: :func:`taxadiffusion.specs.method_spec`. Stage ``method_train@<m>`` trains a method's model,
``method@<m>`` generates and evaluates with it, ``compare`` writes one row per method. Every path comes
from the stage's arguments (dvc.yaml).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from .config import EvaluateConfig, GenerateConfig, ModelConfig, SamplingConfig, TrainConfig
from .errors import UserError
from .files import read_json, write_json, write_text
from .generation import generate
from .metrics.evaluate import evaluate
from .models.level import LevelConfig, write_level
from .specs import BUDGETS, LABELS, PAPER_FISHNET, check_methods, method_spec
from .training import train

# methods drawn from the main pipeline's final level (`--final`) rather than a model of their own
FROM_FINAL = ("taxadiffusion", "cfg")
METHOD_FILE = "method.json"  # what a method samples from and how long it trained (copied next to its metrics)


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
        train(cfg, spec, model_cfg=model_cfg, levels=levels, seed=seed, parent_dir=None, out_dir=out_dir,
              shards=shards, latents_dir=latents_dir, scratch=scratch, log_dir=log_dir,
              preview=None)  # previews: the train@<level> stages only (README "Previews")
    elif method == "sd":  # the base model alone, prompted with the species name
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
    generate(generate_cfg, sampling, model_cfg, levels, seed, model_dir, paths.prepared, paths.images)
    summary = evaluate(evaluate_cfg, levels, paths.shards, paths.images, paths.probe, paths.out, paths.cache)
    write_json(paths.out / METHOD_FILE, info)
    return summary


def _overall_row(method: str, summary: dict, info: dict, levels: list[str]) -> dict:
    overall = summary.get("overall", {})
    row = {"method": method, "description": LABELS[method], "train steps": info.get("train_steps")}
    for backbone, values in overall.items():
        if "fid" in values:
            row[f"FID ({backbone})"] = values["fid"]
        if "lpips" in values:
            row[f"LPIPS ({backbone})"] = values["lpips"]
        if "score" in values:
            row[f"BioCLIP ({backbone})"] = values["score"]
        if backbone == "probe":
            row["probe dist"] = values.get("dist")
            for lv in levels:
                row[f"acc {lv} (probe)"] = values.get("acc", {}).get(lv)
    paper = PAPER_FISHNET.get(method)
    if paper:
        row["paper FishNet FID / LPIPS / BioCLIP"] = " / ".join(str(v) for v in paper)
    return row


def compare(methods: list[str], levels: list[str], methods_dir: str | Path, out_dir: str | Path) -> pd.DataFrame:
    """``<out_dir>/methods.csv`` / ``.md``: one row per method, from ``<methods_dir>/<m>/summary.json``."""
    rows, budgets = [], {}
    for method in check_methods(methods):
        paths = [Path(methods_dir) / method / name for name in ("summary.json", METHOD_FILE)]
        for path in paths:
            if not path.exists():
                raise UserError(f"{path}: missing; run `dvc repro method@{method}`")
        info = read_json(paths[1])
        if info.get("budget") is not None:
            budgets.setdefault(info["budget"], []).append(method)
        rows.append(_overall_row(method, read_json(paths[0]), info, levels))
    table = pd.DataFrame(rows)
    write_text(Path(out_dir) / "methods.csv", table.to_csv(index=False))
    write_text(Path(out_dir) / "methods.md", _markdown(table) + "\n" + _NOTE + _budget_note(budgets))
    return table


def _budget_note(budgets: dict[str, list[str]]) -> str:
    """Which protocol set the trained baselines' steps (train.baseline_budget, docs/deviations.md)."""
    if not budgets:
        return "\nBaseline budget: no trained baseline in this table.\n"
    lines = [f"\nBaseline budget (train.baseline_budget: {b}; {', '.join(ms)}): {BUDGETS[b]}.\n"
             for b, ms in sorted(budgets.items())]
    return "".join(lines)


_NOTE = (
    "\nOur numbers: the run's own data and base model (see README: the embedded default is a synthetic world at "
    "32 px with a 3M-parameter tiny base and minutes of CPU training). The paper column: FishNet, SD1.5 at 512 px, "
    "250K steps per level, FID on Inception, LPIPS-vgg, BioCLIP v1 (docs/method.md §6; via a third-party summary).\n"
)


def _markdown(table: pd.DataFrame) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)
