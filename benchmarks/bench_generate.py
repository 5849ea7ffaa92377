"""Benchmark the ``generate`` stage against a reference-style loop on the same tiny model.

Run from the repository root:
``python benchmarks/bench_generate.py [--taxa 16] [--images 4] [--steps 50] [--batch-size 64] [--threads 2]
[--reference per-image|per-taxon|none]``

Setup (not timed): a level folder with random LoRA / condition-module weights on the shipped tiny base
(``tests/model_fixtures.make_level_dir``) and a prepared table with ``--taxa`` test species in 2 classes.

1. **this stage**: ``taxadiffusion.generate.generate`` end to end (model loading, plan, sampling, PNG
   writes, manifest), ``--taxa x --images`` images, PNDM, TaxaGuide scale 6.
2. **reference**: the official inference style (method.md §3 "Generation loop"): one taxon at a time, the
   condition module run for the taxon, then a stock diffusers ``StableDiffusionPipeline`` built from the tiny
   components (LoRA loaded with ``load_lora_weights``, PNDM from the base config, no safety checker) called
   with ``prompt_embeds`` = the lineage through levels 0..k and ``negative_prompt_embeds`` = the level-0
   output (TaxaGuide), one call per image with its own generator (``per-image``, as ``inference.py``) or one
   call per taxon with ``num_images_per_prompt`` (``per-taxon``). The same per-image seeds as the stage are
   used, so the first images of both are compared pixel by pixel (same computation, different batching).

Prints the settings, images/s of both and the ratio (goal >= 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def setup(root: Path, n_taxa: int) -> None:
    from model_fixtures import lineage, make_level_dir, make_prepared

    rows = [(lineage(f"Class{t % 2}", f"Order{t % 2}", f"Family{t % 4}", f"Genus{t % 8}", f"sp{t}"), "test")
            for t in range(n_taxa)]
    make_prepared(root / "prepared", rows)
    make_level_dir(root / "models" / "species")


def make_params(root: Path, args):
    from model_fixtures import TINY_BASE

    from taxadiffusion.config import params_from_dict

    return params_from_dict({
        "num_inference_steps": args.steps,
        "guidance_scale": 6.0,
        "model": {"pretrained": str(TINY_BASE)},
        "generate": {"sampler": "pndm", "batch_size": args.batch_size, "images_per_species": args.images,
                     "max_species_per_class": 400, "out": str(root / "generated")},
    })


def run_stage(root: Path, params) -> float:
    from taxadiffusion.generate import generate

    start = time.perf_counter()
    summary = generate(params, root / "models" / "species", root / "prepared", root / "generated")
    seconds = time.perf_counter() - start
    assert summary["drawn_here"] == summary["images"], summary
    return seconds


def run_reference(root: Path, params, mode: str) -> float:
    """One taxon at a time through a stock StableDiffusionPipeline (timed from the first taxon)."""
    import pandas as pd
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from taxadiffusion.models.base import load_base
    from taxadiffusion.models.conditioner import TaxonomyConditioner, lineage_texts
    from taxadiffusion.models.text_cache import TextEmbeddingCache

    level_dir = root / "models" / "species"
    levels = params.level_names
    base = load_base(params.model)
    sched_config = {k: v for k, v in base.scheduler_config.items() if k != "_class_name"}
    pipe = StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        scheduler=PNDMScheduler.from_config(sched_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(level_dir))
    pipe.set_progress_bar_config(disable=True)
    conditioner = TaxonomyConditioner.load(level_dir).eval()
    cache = TextEmbeddingCache(base.text_encoder, base.tokenizer)
    manifest = pd.read_csv(root / "generated" / "manifest.csv", dtype={"seed": int}, keep_default_na=False)
    out = root / "reference"
    k = len(levels) - 1
    start = time.perf_counter()
    for _, group in manifest.groupby("taxon", sort=True):
        lin = {lv: group.iloc[0][lv] for lv in levels}
        with torch.no_grad():
            hidden = cache.lineages([lineage_texts(levels, lin, k)])
            cond = conditioner(hidden, k)
            neg = conditioner(hidden, 0)  # TaxaGuide: the same lineage through the level-0 module only
        folder = out / str(group.iloc[0]["taxon"])
        folder.mkdir(parents=True, exist_ok=True)
        calls = [[s] for s in group["seed"]] if mode == "per-image" else [list(group["seed"])]
        for seeds in calls:
            images = pipe(
                prompt_embeds=cond, negative_prompt_embeds=neg, num_images_per_prompt=len(seeds),
                num_inference_steps=params.num_inference_steps, guidance_scale=params.guidance_scale,
                generator=[torch.Generator().manual_seed(int(s)) for s in seeds], height=32, width=32,
            ).images
            for s, image in zip(seeds, images):
                image.save(folder / f"{s}.png")
    return time.perf_counter() - start


def compare_first(root: Path) -> str:
    """Max |pixel difference| between the stage's and the reference's first image (same seed)."""
    import pandas as pd
    from PIL import Image

    row = pd.read_csv(root / "generated" / "manifest.csv", keep_default_na=False).iloc[0]
    ours = np.asarray(Image.open(root / "generated" / row["path"]), dtype=int)
    ref = np.asarray(Image.open(root / "reference" / str(row["taxon"]) / f"{row['seed']}.png"), dtype=int)
    diff = np.abs(ours - ref)
    return f"max {diff.max()} / mean {diff.mean():.3f} uint8 levels"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taxa", type=int, default=16)
    parser.add_argument("--images", type=int, default=4, help="images per taxon")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", default="per-image", choices=["per-image", "per-taxon", "none"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    n = args.taxa * args.images
    print(f"settings: tiny preset (32 px), {args.taxa} taxa x {args.images} images = {n}, PNDM {args.steps} steps, "
          f"TaxaGuide scale 6, fp32 CPU, {args.threads} torch threads, stage batch_size {args.batch_size}, "
          f"reference {args.reference}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup(root, args.taxa)
        params = make_params(root, args)
        ours = run_stage(root, params)
        print(f"this stage : {ours:7.1f} s  {n / ours:6.2f} images/s  (end to end: load, plan, sample, PNG, manifest)")
        if args.reference != "none":
            ref = run_reference(root, params, args.reference)
            print(f"reference  : {ref:7.1f} s  {n / ref:6.2f} images/s  ({args.reference} stock pipeline calls)")
            print(f"ratio      : {ref / ours:.2f}x   first image, stage vs reference: {compare_first(root)}")
        print(json.dumps({"images": n, "steps": args.steps, "stage_s": round(ours, 2),
                          "reference_s": None if args.reference == "none" else round(ref, 2)}))


if __name__ == "__main__":
    main()
