"""``taxadiffusion export``: a trained model as one self-contained folder to share, optionally pushed to the Hub::

    taxadiffusion export --out export/species [--model models/species] [--push-to-hub you/fish-taxadiffusion]

The folder (docs/architecture.md "export"): the trained level's files as ``train@<level>`` wrote them (condition
module, LoRA, ``train_config.json``), ``taxonomy.json`` (the lineages it knows), ``export.json`` (levels, seed,
sampling settings, base model, file hashes; read by :mod:`taxadiffusion.tools.exported`), ``base/`` for the ``tiny``
preset (14 MB, so the folder draws without this repository's assets; SD1.5 is named, not copied), ``samples.png``
(a grid of ``data/generated``, when those images were drawn by this model) and ``README.md``, a model card (dataset,
levels, steps, the metrics table of ``metrics/<evaluate.group_level>_metrics.md`` when present, the grid, how to
load it in stock diffusers and with this package). The sampling settings and seed are those
``data/generated/settings.json`` records for this model (else params.yaml's), so a recipient draws the same pixels as
``generate`` did.

``--push-to-hub REPO`` creates the model repository if needed and uploads the folder (``huggingface_hub.HfApi``,
your ``hf auth login`` token); a failure is one line, and the folder stays ready for ``hf upload``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
from PIL import Image

from taxadiffusion.cli import run_tool
from taxadiffusion.config import Params, SamplingConfig, load_params
from taxadiffusion.core.errors import UserError
from taxadiffusion.core.files import atomic_dir, read_json, sha256_file, write_json, write_text
from taxadiffusion.models.level import LevelConfig, check_level_dir
from taxadiffusion.tools.exported import BASE_DIR, EXPORT_FILE, FORMAT
from taxadiffusion.tools.model_card import CardFacts, model_card

log = logging.getLogger(__name__)

LEVEL_FILES = ("condition.safetensors", "condition_config.json", "pytorch_lora_weights.safetensors",
               "train_config.json")
GRID_TAXA, GRID_IMAGES, GRID_TILE = 6, 4, 96  # samples.png: rows of taxa, images per taxon, min tile pixels


@dataclass(frozen=True)
class ExportSource:
    """The workspace paths an export reads (``dvc.yaml``'s: the final level, prepare's and generate's folders)."""

    model: Path
    prepared: Path
    generated: Path
    metrics: Path


def _level(params: Params, model: Path) -> LevelConfig:
    config = check_level_dir(model, params.level_names, 0)
    if config.prompt_only or config.full_unet or not config.has_condition_module or not config.has_lora:
        raise UserError(f"{model}: not a TaxaDiffusion level (LoRA + condition module); export shares those "
                        "(models/<level>), not the comparison baselines")
    return config


def _drawn_by(generated: Path, files: dict) -> Optional[dict]:
    """``data/generated/settings.json`` when its images were drawn by exactly these model files, else None."""
    path = generated / "settings.json"
    settings = read_json(path) if path.is_file() else None
    if not isinstance(settings, dict) or not (generated / "manifest.csv").is_file():
        return None
    drawn = settings.get("model_files", {})
    return settings if all(drawn.get(k) == v for k, v in files.items() if k in drawn) and drawn else None


def sample_grid(generated: Path, out: Path) -> Optional[dict]:
    """``samples.png``: up to GRID_TAXA taxa spread over the manifest, GRID_IMAGES images each (nearest-neighbour
    enlarged to GRID_TILE px); returns the first row's lineage and seeds (the card's example), or None."""
    manifest = pd.read_csv(generated / "manifest.csv", dtype={"path": str})
    taxa = sorted(manifest["taxon"].unique())
    picked = [taxa[round(i * (len(taxa) - 1) / max(1, GRID_TAXA - 1))] for i in range(min(GRID_TAXA, len(taxa)))]
    rows = [manifest[manifest["taxon"] == t].sort_values("index").head(GRID_IMAGES) for t in dict.fromkeys(picked)]
    if not rows:
        return None
    tiles = [[Image.open(generated / p).convert("RGB") for p in r["path"]] for r in rows]
    side = max(GRID_TILE, tiles[0][0].width)
    grid = Image.new("RGB", (side * GRID_IMAGES, side * len(tiles)), "white")
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            grid.paste(tile.resize((side, side), Image.NEAREST), (j * side, i * side))
    grid.save(out, format="PNG")
    return {"rows": len(tiles), "first": rows[0]}


def _bundle_base(config: LevelConfig, staging: Path) -> bool:
    """Copy the tiny base into the folder (True); SD1.5 stays named by ``model.pretrained`` (False)."""
    if config.model.preset != "tiny":
        return False
    source = Path(config.model.pretrained)
    if not source.is_dir():
        raise UserError(f"model.pretrained={config.model.pretrained!r}: the tiny base folder is not here (run the "
                        "export from the workspace that trained the model)")
    shutil.copytree(source, staging / BASE_DIR, ignore=shutil.ignore_patterns("samples.png", "pretrain.log"))
    return True


def _files(staging: Path) -> dict:
    return {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*"))
            if p.is_file() and p.name not in (EXPORT_FILE, "README.md")}


def export_model(params: Params, src: ExportSource, out: str | Path) -> Path:
    """Write the folder of the module docstring to ``out`` (whole, atomically); returns it."""
    config = _level(params, src.model)
    taxonomy = src.prepared / "taxonomy.json"
    if not taxonomy.is_file():
        raise UserError(f"{taxonomy}: not found (run `dvc repro prepare`, or pass --prepared)")
    with atomic_dir(out) as staging:
        for name in LEVEL_FILES:
            shutil.copy2(src.model / name, staging / name)
        shutil.copy2(taxonomy, staging / "taxonomy.json")
        bundled = _bundle_base(config, staging)
        # the settings and seed the generated images were drawn with, when this model drew them: what a recipient
        # needs to draw the same pixels (params.yaml may have moved on since)
        drawn = _drawn_by(src.generated, {n: sha256_file(src.model / n) for n in LEVEL_FILES})
        sampling = SamplingConfig(**drawn["settings"]) if drawn else params.sampling
        seed = drawn["seed"] if drawn else params.seed
        grid = sample_grid(src.generated, staging / "samples.png") if drawn else None
        model = {**asdict(config.model), "pretrained": BASE_DIR if bundled else config.model.pretrained}
        info = {"format": FORMAT, "levels": config.levels, "level": config.level, "seed": seed, "model": model,
                "base_bundled": bundled, "base_source": config.model.pretrained,
                "sampling": {**asdict(sampling), "guidance_range": list(sampling.guidance_range)},
                "files": _files(staging)}
        write_json(staging / EXPORT_FILE, info)
        facts = CardFacts.gather(info, src, config, grid)
        write_text(staging / "README.md", model_card(facts))
    log.info("export: wrote %s (%d files, base %s)", out, len(info["files"]) + 2,
             "bundled" if bundled else config.model.pretrained)
    return Path(out)


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create the model repository (if needed) and upload ``folder``; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(Path(folder).resolve()), repo_type="model",
                                   commit_message="taxadiffusion export")
    except (OSError, ValueError) as exc:  # huggingface_hub's errors (HTTP, offline, no token) are OSErrors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--push-to-hub {repo_id}: {first}; the folder is ready at {folder} "
                        f"(`hf upload {repo_id} {folder}` once that is fixed)") from None
    url = getattr(commit, "commit_url", None) or str(commit)
    log.info("export: pushed %s to https://huggingface.co/%s (%s)", folder, repo_id, url)
    return url


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taxadiffusion export", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the folder to write (replaced whole)")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--model", default=None, help="trained level folder (default models/<generate.target_level>)")
    p.add_argument("--prepared", default="data/prepared", help="prepare's folder (taxonomy.json, report.json)")
    p.add_argument("--generated", default="data/generated", help="generate's folder (the sample grid)")
    p.add_argument("--metrics", default="metrics", help="evaluate's folder (the metrics table)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload to this Hugging Face model repo")
    p.add_argument("--private", action="store_true", help="create the Hub repository private")
    return p


def run(args: argparse.Namespace) -> Path:
    params = load_params(args.params)
    src = ExportSource(Path(args.model or f"models/{params.generate.target_level}"), Path(args.prepared),
                       Path(args.generated), Path(args.metrics))
    out = export_model(params, src, args.out)
    if args.push_to_hub:
        push_to_hub(out, args.push_to_hub, args.private)
    return out


def main(argv: list[str] | None = None) -> None:
    run_tool(run, parser(), argv)


if __name__ == "__main__":
    main()
