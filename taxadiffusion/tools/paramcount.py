"""Parameter counts of paper Table S1, computed from the real modules (docs/method.md §1.4).

The SD1.5 UNet is built from the config kept in ``assets/sd15/unet/config.json`` on the ``meta``
device: every parameter has its true shape but no storage, so the count needs no weights, no
download and a few seconds. LoRA is added exactly as the official code does (peft ``LoraConfig`` +
``unet.add_adapter``, docs/method.md §1.3) and the condition module is our own
:class:`~taxadiffusion.models.conditioner.TaxonomyConditioner`, so the figures check the code we train
with, not a formula.

Usage: ``taxadiffusion paramcount [--levels N | --params presets/fishnet.yaml] [--json] [--unet-config PATH]``.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from taxadiffusion.cli import run_tool
from taxadiffusion.config import Params, load_params
from taxadiffusion.core.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]  # taxadiffusion/tools/ -> the repository
SD15_DIR = REPO_ROOT / "assets" / "sd15"
SD15_UNET_CONFIG = SD15_DIR / "unet" / "config.json"
INAT_LEVELS = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]

# The official LoRA (docs/method.md §1.3): q/k/v/out of self- and cross-attention in all 16 blocks.
LORA_KWARGS = dict(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"])
# The official condition module per level (docs/method.md §1.2): 2 post-norm layers, d=768, 8 heads, FFN 2048.
CONDITIONER_KWARGS = dict(width=768, num_layers=2, num_heads=8, ff_dim=2048, dropout=0.1)  # nn defaults

MODELS = ["SD", "SD+LoRA", "SD+Full FT", "TaxaDiffusion"]
# Table S1 as printed, in millions ("Model Size", "Trainable Parameters"). The TaxaDiffusion row is the
# 5-level (FishNet) model, so it is only compared when --levels is 5.
PAPER_M = {
    "SD": (859.52, 0.0),
    "SD+LoRA": (860.32, 0.80),
    "SD+Full FT": (859.52, 859.52),
    "TaxaDiffusion": (915.45, 55.93),
}
PAPER_TAXA_LEVELS = 5


FISHNET_LEVELS = ("class", "order", "family", "genus", "species")  # the paper's FishNet / BIOSCAN ranks


def level_names(levels: int) -> list[str]:
    """Names only label the modules; the count depends on their number alone."""
    if levels == len(FISHNET_LEVELS):
        return list(FISHNET_LEVELS)
    if levels == len(INAT_LEVELS):
        return list(INAT_LEVELS)
    return [f"level{i}" for i in range(levels)]


def _numel(params, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


def _resolve_unet_config(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UserError(f"{path}: UNet config not found "
                        "(give a diffusers UNet2DConditionModel config.json or its folder)")
    return path


@functools.lru_cache(maxsize=4)
def unet_counts(unet_config: str | Path = SD15_UNET_CONFIG, lora_rank: int = 4, lora_alpha: int = 4) -> dict:
    """Counts for the UNet alone, with full fine-tuning, and with the official LoRA (built on ``meta``).

    Cached because building the UNet dominates the run time and does not depend on the level count.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    path = _resolve_unet_config(unet_config)
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(config, dict) or config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        found = config.get("_class_name") if isinstance(config, dict) else type(config).__name__
        raise UserError(f"{path}: field _class_name is {found!r}, expected 'UNet2DConditionModel'")
    try:
        # meta: true shapes, no storage and no init compute -> seconds instead of minutes and 3.4 GB.
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: cannot build UNet2DConditionModel from this config ({exc})") from None

    base = _numel(unet.parameters())
    unet.requires_grad_(True)  # SD+Full FT: every UNet weight is updated
    full_ft = _numel(unet.parameters(), trainable_only=True)
    unet.requires_grad_(False)  # SD / LoRA / TaxaDiffusion: the UNet itself is frozen (docs/method.md §1.1)
    frozen_trainable = _numel(unet.parameters(), trainable_only=True)

    try:
        with torch.device("meta"):
            unet.add_adapter(LoraConfig(**{**LORA_KWARGS, "r": lora_rank, "lora_alpha": lora_alpha}))
    except ValueError as exc:
        raise UserError(f"{path}: cannot add the LoRA adapter to this UNet ({exc})") from None
    lora_params = [p for n, p in unet.named_parameters() if ".lora_" in n]
    lora_layers = sum(1 for n, _ in unet.named_modules() if n.endswith(".lora_A.default"))
    try:  # shown in the table: keep it short when it is the repo's own asset
        shown = str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        shown = str(path)
    return {
        "unet_config": shown,
        "unet": base,
        "unet_full_ft_trainable": full_ft,
        "unet_frozen_trainable": frozen_trainable,
        "unet_with_lora": _numel(unet.parameters()),
        "lora": _numel(lora_params),
        "lora_trainable": _numel(unet.parameters(), trainable_only=True),
        "lora_layers": lora_layers,
    }


def conditioner_counts(levels: int, cond: dict | None = None, names: list[str] | None = None) -> dict:
    """Counts of our TaxonomyConditioner with ``levels`` level modules (built on ``meta``); ``cond`` overrides
    ``CONDITIONER_KWARGS`` (a params file's ``model.cond_*``)."""
    import torch

    # imported here like torch and diffusers: `--help` and argument errors answer without loading the model code
    from taxadiffusion.models.conditioner import ConditionerConfig, TaxonomyConditioner

    if levels < 1:
        raise UserError(f"--levels must be at least 1, got {levels}")
    with torch.device("meta"):
        module = TaxonomyConditioner(ConditionerConfig(levels=names or level_names(levels),
                                                       **{**CONDITIONER_KWARGS, **(cond or {})}))
    return {
        "conditioner": _numel(module.parameters()),
        # Progressive training makes each level trainable in its own stage; Table S1 sums them all.
        "conditioner_trainable": _numel(module.parameters(), trainable_only=True),
        "per_level": _numel(module.encoders[0].parameters()),
        "per_encoder_layer": _numel(module.encoders[0].layers[0].parameters()),
    }


@functools.lru_cache(maxsize=1)
def frozen_component_counts() -> dict:
    """Text encoder and VAE from ``assets/sd15``: frozen throughout and not counted in Table S1."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(SD15_DIR / "text_encoder")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(SD15_DIR / "vae")))
    return {"text_encoder": _numel(text.parameters()), "vae": _numel(vae.parameters())}


def count_parameters(levels: int = 5, unet_config: str | Path = SD15_UNET_CONFIG, frozen: bool = False,
                     params: Params | None = None) -> dict:
    """Table S1 rows (exact counts) plus the breakdown; ``frozen`` adds the text encoder and VAE counts.
    ``params`` (a params file) gives the levels, the condition module size and the LoRA rank instead."""
    names = None
    cond, lora = None, {}
    if params is not None:
        names = params.level_names
        levels = len(names)
        m = params.model
        cond = {"num_layers": m.cond_layers, "num_heads": m.cond_heads, "ff_dim": m.cond_ff}
        lora = {"lora_rank": params.train.lora_rank, "lora_alpha": params.train.lora_alpha}
    if levels < 1:  # checked before the (slower) UNet build
        raise UserError(f"--levels must be at least 1, got {levels}")
    u = unet_counts(unet_config, **lora)
    c = conditioner_counts(levels, cond, names)
    rows = {
        "SD": (u["unet"], u["unet_frozen_trainable"]),
        "SD+LoRA": (u["unet_with_lora"], u["lora_trainable"]),
        "SD+Full FT": (u["unet"], u["unet_full_ft_trainable"]),
        "TaxaDiffusion": (u["unet_with_lora"] + c["conditioner"], u["lora_trainable"] + c["conditioner_trainable"]),
    }
    models = {}
    for name in MODELS:
        total, trainable = rows[name]
        paper = PAPER_M[name] if (name != "TaxaDiffusion" or levels == PAPER_TAXA_LEVELS) else None
        models[name] = {
            "total": total,
            "trainable": trainable,
            "paper_total_m": paper[0] if paper else None,
            "paper_trainable_m": paper[1] if paper else None,
        }
    result = {
        "levels": levels,
        "level_names": names or level_names(levels),
        "unet_config": u["unet_config"],
        "models": models,
        "breakdown": {
            "unet": u["unet"],
            "lora": u["lora"],
            "lora_layers": u["lora_layers"],
            "lora_rank": lora.get("lora_rank", LORA_KWARGS["r"]),
            "conditioner": c["conditioner"],
            "per_level": c["per_level"],
            "per_encoder_layer": c["per_encoder_layer"],
        },
    }
    if frozen:
        result["frozen_not_counted"] = frozen_component_counts()
    return result


def paper_agrees(ours: int, paper_m: float | None) -> bool | None:
    """The paper prints 2 decimals in millions, sometimes rounded (0.80) and sometimes truncated (55.93)."""
    if paper_m is None:
        return None
    return abs(ours / 1e6 - paper_m) < 0.01


def format_table(result: dict) -> str:
    def m(n):
        return "-" if n is None else f"{n:.2f} M"

    header = ["Model", "Total", "Trainable", "Total (M)", "Paper", "Trainable (M)", "Paper", "Agrees"]
    lines = []
    for name, row in result["models"].items():
        agree = [paper_agrees(row["total"], row["paper_total_m"]),
                 paper_agrees(row["trainable"], row["paper_trainable_m"])]
        lines.append([
            name,
            f"{row['total']:,}",
            f"{row['trainable']:,}",
            m(row["total"] / 1e6),
            m(row["paper_total_m"]),
            m(row["trainable"] / 1e6),
            m(row["paper_trainable_m"]),
            "-" if None in agree else ("yes" if all(agree) else "NO"),
        ])
    widths = [max(len(str(r[i])) for r in [header] + lines) for i in range(len(header))]

    def fmt(r) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    b = result["breakdown"]
    out = [
        f"Table S1 parameter counts, {result['levels']} levels ({', '.join(result['level_names'])}); "
        f"UNet built on meta from {result['unet_config']}",
        fmt(header),
        fmt(["-" * w for w in widths]),
        *(fmt(r) for r in lines),
        "",
        f"UNet {b['unet']:,} | LoRA r={b['lora_rank']} on {b['lora_layers']} Linear layers {b['lora']:,} | "
        f"conditioner {result['levels']} levels x {b['per_level']:,} = {b['conditioner']:,} "
        f"(one encoder layer {b['per_encoder_layer']:,})",
    ]
    if result["levels"] != PAPER_TAXA_LEVELS:
        out.append(f"The paper's TaxaDiffusion row is the {PAPER_TAXA_LEVELS}-level model; not compared here.")
    if "frozen_not_counted" in result:
        f = result["frozen_not_counted"]
        out.append(f"Frozen, not counted in Table S1: text encoder {f['text_encoder']:,}, VAE {f['vae']:,}")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taxadiffusion paramcount", description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=5, help="taxonomic levels in the condition module (default 5)")
    parser.add_argument("--params", default=None,
                        help="a params file (e.g. presets/fishnet.yaml): its levels, model.cond_* and LoRA rank")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--unet-config", default=str(SD15_UNET_CONFIG),
                        help="diffusers UNet config.json or its folder (default: the SD1.5 config in assets/sd15)")
    return parser


def run(args: argparse.Namespace) -> None:
    params = load_params(args.params) if args.params else None
    result = count_parameters(args.levels, args.unet_config, frozen=True, params=params)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


def main(argv: list[str] | None = None) -> None:
    run_tool(run, parser(), argv)


if __name__ == "__main__":
    main()
