"""The paper's comparison and ablation tables, run by the same code as the main pipeline.

``methods`` in params.yaml selects them: ``taxadiffusion`` (the main pipeline's own numbers), ``sd`` (the
base model, no fine-tuning, prompted with the species name), ``lora`` (one LoRA stage on the species name),
``full`` (full fine-tuning on the species name), ``joint`` (all levels trained together), ``random_level``
(a random level per step) and ``cfg`` (TaxaDiffusion sampled with vanilla CFG instead of TaxaGuide).
Each non-default method trains into ``models/methods/<m>``, generates into ``data/methods/<m>`` and is
evaluated into ``metrics/methods/<m>/``; ``compare`` writes ``metrics/methods.csv`` / ``.md``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd

from .config import Params
from .errors import UserError
from .io import write_json, write_text
from .training import METHODS, method_spec, train

# Species-level numbers of the paper on FishNet (method.md §6; via a third-party summary, unverified).
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


def check_methods(methods: list) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"params.yaml methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    return list(methods)


def train_method(params: Params, method: str, root: str | Path = ".") -> Path:
    """Stage ``method_train@<m>``: train the method's model into ``models/methods/<m>``.

    Methods without training of their own still get a folder with ``method.json`` (what they sample
    from), so every ``method_train@<m>`` has the same declared output.
    """
    check_methods([method])
    root = Path(root)
    levels = params.level_names
    model_dir = root / "models" / "methods" / method
    spec = method_spec(params, method)
    if spec is not None:
        train(params, spec, models_dir=root / "models", shards=root / "data" / "shards",
              latents_dir=root / "data" / "latents", log_dir=root / "metrics" / "train" / spec.name)
    elif method == "sd":  # the base model alone, prompted with the species name
        write_json(model_dir / "train_config.json",
                   {"levels": levels, "level": levels[-1], "level_index": len(levels) - 1, "prompt_only": True})
    note = {"method": method, "description": LABELS[method],
            "samples_from": str(model_dir) if method not in ("taxadiffusion", "cfg") else f"models/{levels[-1]}"}
    write_json(model_dir / "method.json", note)
    return model_dir


def sample_method(params: Params, method: str, root: str | Path = ".") -> dict:
    """Stage ``method@<m>``: generate with the method's model and evaluate into ``metrics/methods/<m>``."""
    from .generate import generate
    from .metrics.evaluate import evaluate

    check_methods([method])
    root = Path(root)
    levels = params.level_names
    out_metrics = root / "metrics" / "methods" / method
    gen_dir = root / "data" / "methods" / method
    if method == "taxadiffusion":  # the main pipeline's own generation and evaluation
        gen_dir.mkdir(parents=True, exist_ok=True)
        write_json(gen_dir / "method.json", {"images": "data/generated (the main pipeline)"})
        summary = json.loads((root / "metrics" / "summary.json").read_text())
        write_json(out_metrics / "summary.json", summary)
        return summary
    run_params = copy.deepcopy(params)
    run_params.generate.target_level = levels[-1]
    model_dir = root / "models" / "methods" / method
    if method == "cfg":
        model_dir = root / "models" / levels[-1]
        run_params.generate.guidance = "cfg"
    generate(run_params, model_dir, root / "data" / "prepared", gen_dir)
    return evaluate(run_params, root / "data" / "shards", gen_dir, root / "models" / "probe", out_metrics, None)


def _overall_row(method: str, summary: dict, levels: list[str]) -> dict:
    overall = summary.get("overall", {})
    row = {"method": method, "description": LABELS[method]}
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


def compare(params: Params, root: str | Path = ".") -> pd.DataFrame:
    """``metrics/methods.csv`` / ``.md``: one row per method, species-level numbers."""
    root = Path(root)
    rows = []
    for method in check_methods(params.methods):
        path = root / "metrics" / "methods" / method / "summary.json"
        if not path.exists():
            raise UserError(f"{path}: missing; run `dvc repro method@{method}`")
        rows.append(_overall_row(method, json.loads(path.read_text()), params.level_names))
    table = pd.DataFrame(rows)
    write_text(root / "metrics" / "methods.csv", table.to_csv(index=False))
    write_text(root / "metrics" / "methods.md", _markdown(table) + "\n" + _NOTE)
    return table


_NOTE = (
    "\nOur numbers: the run's own data and base model (see README: the embedded default is a synthetic world at "
    "32 px with a 3M-parameter tiny base and minutes of CPU training). The paper column: FishNet, SD1.5 at 512 px, "
    "250K steps per level, FID on Inception, LPIPS-vgg, BioCLIP v1 (method.md §6; via a third-party summary).\n"
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


