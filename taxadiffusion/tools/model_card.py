"""The model card (``README.md``) of an exported folder: what was trained on what, how well, and how to load it.

Hugging Face reads the YAML front matter (tags; ``base_model`` and ``library_name: diffusers`` for SD1.5). The stock
diffusers recipe is the first Python block of ``docs/diffusers.md`` verbatim (``tests/test_stock_diffusers.py`` runs
that block against our sampler), followed by the lines that use this folder, its base and its seeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from taxadiffusion.core.files import read_json
from taxadiffusion.core.lineage import NONE, image_seed, lineage_key
from taxadiffusion.models.level import LevelConfig

REPO_ROOT = Path(__file__).resolve().parents[2]  # taxadiffusion/tools/ -> the repository (docs/)
DIFFUSERS_DOC = REPO_ROOT / "docs" / "diffusers.md"
PROJECT = "taxadiffusion"
N_EXAMPLE = 4


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, gathered from the export and the workspace."""

    info: dict  # export.json
    report: Optional[dict]  # data/prepared/report.json
    steps: list  # (level, steps, lr) of every trained level found next to the exported one
    metrics_table: Optional[str]  # metrics/<evaluate.group_level>_metrics.md (Table S2: class_metrics.md)
    example: list  # a lineage (names coarse -> fine) the model knows
    seeds: list  # its first N_EXAMPLE image seeds, as in generate
    grid_rows: int  # rows of samples.png (0: no grid)

    @classmethod
    def gather(cls, info: dict, src, config: LevelConfig, grid: Optional[dict]) -> "CardFacts":
        levels = info["levels"]
        report = read_json(src.prepared / "report.json") if (src.prepared / "report.json").is_file() else None
        steps = []
        for lv in levels:
            folder = src.model.parent / lv
            found = LevelConfig.load(folder) if (folder / "train_config.json").is_file() else None
            if found is not None and found.spec is not None:
                steps.append((lv, found.spec.steps, found.spec.lr))
        table = src.metrics / f"{_group_level(src.metrics)}_metrics.md"
        if grid:
            first = grid["first"]
            names = [str(first.iloc[0][lv]) for lv in levels if str(first.iloc[0][lv]) != NONE]
            seeds = [int(s) for s in first["seed"]][:N_EXAMPLE]
        else:
            names = _first_lineage(src)
            seeds = [image_seed(info["seed"], lineage_key(names), i) for i in range(N_EXAMPLE)]
        return cls(info, report, steps, table.read_text().strip() if table.is_file() else None, names, seeds,
                   grid["rows"] if grid else 0)


def _group_level(metrics: Path) -> str:
    """The level evaluate grouped by (summary.json ``data.group_level``; ``class`` before the setting existed)."""
    summary = metrics / "summary.json"
    return (read_json(summary).get("data", {}).get("group_level") if summary.is_file() else None) or "class"


def _first_lineage(src) -> list:
    return [str(n) for n in read_json(src.prepared / "taxonomy.json")["lineages"][0]]


def _front_matter(facts: CardFacts) -> str:
    model = facts.info["model"]
    lines = ["---", "tags:", *(f"- {t}" for t in (PROJECT, "text-to-image", "lora", "biology", "taxonomy")),
             "pipeline_tag: text-to-image"]
    if model["preset"] == "sd15":
        lines.append("library_name: diffusers")
        if re.match(r"^[\w.-]+/[\w.-]+$", facts.info["base_source"]) and not Path(facts.info["base_source"]).exists():
            lines.append(f"base_model: {facts.info['base_source']}")
    return "\n".join(lines + ["---", ""])


def _data_section(facts: CardFacts) -> str:
    r = facts.report
    if r is None:
        return "## Data\n\nNo `data/prepared/report.json` was found at export.\n"
    taxa = ", ".join(f"{n} {lv}" for lv, n in r.get("taxa", {}).items())
    return ("## Data\n\n| dataset | annotation file | images | train / test | taxa |\n|---|---|---|---|---|\n"
            f"| `{r['dataset']}` | `{Path(r['metadata']).name}` | {r['rows_kept']} | {r['splits']['train']} / "
            f"{r['splits']['test']} | {taxa} |\n\nEvery dropped row is counted by reason in the training run's "
            "`data/prepared/report.json`.\n")


def _training_section(facts: CardFacts) -> str:
    info, model = facts.info, facts.info["model"]
    rows = "".join(f"| {lv} | {steps} | {lr:g} |\n" for lv, steps, lr in facts.steps)
    base = "the bundled tiny base (`base/`)" if info["base_bundled"] else f"`{info['base_source']}`"
    return (f"## Training\n\nLevels, coarse to fine: {', '.join(info['levels'])}; one condition module per level "
            f"({model['cond_layers']} layers, {model['cond_heads']} heads, ff {model['cond_ff']}), a LoRA on {base} "
            f"({model['preset']} preset), trained progressively, seed {info['seed']}.\n\n"
            f"| level | steps | lr |\n|---|---|---|\n{rows}")


def _use_section(facts: CardFacts) -> str:
    info, s = facts.info, facts.info["sampling"]
    k = len(facts.example) - 1
    text = (f"## Use it\n\nWith this package (`pip install` the {PROJECT} repository), any preset; the same pixels as "
            "its `generate` stage for the same lineage and seed:\n\n```python\n"
            "from taxadiffusion.tools.exported import draw_export\n\n"
            f"draw_export(\".\", {'/'.join(facts.example)!r}, n={N_EXAMPLE}).save(\"grid.png\")  # \".\": this folder\n"
            "```\n\n")
    if info["model"]["preset"] != "sd15":
        return text + ("Stock diffusers: the tiny base's VAE is this package's parameter-free `SpaceToDepthVAE`, which "
                       "diffusers has no class for; use the lines above.\n")
    recipe = _diffusers_recipe()
    lineage = ", ".join(f"{lv!r}: {name!r}" for lv, name in zip(info["levels"], facts.example))
    sched = "" if s["sampler"] == "pndm" else (f"\n# sampler {s['sampler']}: set pipe.scheduler to it "
                                               "(docs/diffusers.md)")
    return text + ("With stock diffusers (the condition module is plain safetensors; the functions come from "
                   f"{PROJECT}'s docs/diffusers.md):\n\n```python\n{recipe}```\n\n```python\n"
                   "import torch\nfrom diffusers import StableDiffusionPipeline\n\n"
                   "folder = \".\"  # this folder (from the Hub: huggingface_hub.snapshot_download(repo_id))\n"
                   f"pipe = StableDiffusionPipeline.from_pretrained({info['base_source']!r}, safety_checker=None, "
                   "requires_safety_checker=False)\npipe.load_lora_weights(folder)\n"
                   f"lineage = {{{lineage}}}\ncond, neg = taxadiffusion_embeds(pipe, folder, lineage, cut_off={k})\n"
                   f"seeds = {facts.seeds}  # generate's seeds of images 0..{N_EXAMPLE - 1} of this taxon{sched}\n"
                   "images = pipe(prompt_embeds=cond.expand(len(seeds), -1, -1), "
                   "negative_prompt_embeds=neg.expand(len(seeds), -1, -1),\n"
                   f"              guidance_scale={s['scale']:g}, num_inference_steps={s['steps']},\n"
                   "              generator=[torch.Generator(\"cpu\").manual_seed(x) for x in seeds]).images\n```\n")


def _diffusers_recipe() -> str:
    if not DIFFUSERS_DOC.is_file():
        return f"# see docs/diffusers.md of the {PROJECT} repository for taxadiffusion_embeds\n"
    return re.search(r"```python\n(.*?)```", DIFFUSERS_DOC.read_text(), re.S).group(1)


def model_card(facts: CardFacts) -> str:
    info, s = facts.info, facts.info["sampling"]
    name = facts.report["dataset"] if facts.report else "a dataset of its own"
    metrics = facts.metrics_table or "Not evaluated at export (no per-group table `metrics/<group>_metrics.md`)."
    samples = (f"![samples](samples.png)\n\n{facts.grid_rows} taxa (rows), images 0-3 each, as `generate` drew them: "
               f"{s['sampler']} {s['steps']} steps, {s['guidance']} scale {s['scale']:g}, seed {info['seed']}.\n"
               if facts.grid_rows else "No generated images of this model were found at export.\n")
    return "\n".join([
        _front_matter(facts),
        f"# TaxaDiffusion on {name}: {info['levels'][0]} to {info['levels'][-1]}\n",
        "A taxonomy-conditioned image generator (the TaxaDiffusion method, Karimi Monsefi et al., ICCV 2025) "
        f"trained with the open {PROJECT} pipeline: one condition module per taxonomic level on top of a "
        "LoRA-tuned base model, sampled with TaxaGuide.\n",
        _data_section(facts), _training_section(facts),
        f"## Metrics\n\nPer class, from the training run's `evaluate` stage:\n\n{metrics}\n",
        f"## Samples\n\n{samples}", _use_section(facts),
        "## Files\n\n`condition.safetensors` + `condition_config.json` (the condition modules), "
        "`pytorch_lora_weights.safetensors` (the LoRA, diffusers format), `train_config.json` (how it was trained), "
        "`taxonomy.json` (the lineages it knows), `export.json` (levels, seed, sampling settings, base, sha256 of "
        "every file)" + (", `base/` (the tiny base)" if info["base_bundled"] else "") + ".\n",
    ])
