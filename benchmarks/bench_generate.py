"""Benchmark the ``generate`` stage against a reference-style loop on the same tiny model.

Run from the repository root:
``python benchmarks/bench_generate.py [--taxa 16] [--images 4] [--steps 50] [--batch-size 64] [--threads 2]
[--reference per-image|per-taxon|none]``

Setup (not timed): a species-level folder with random LoRA / condition-module weights on the shipped tiny
base (written by ``taxadiffusion.models.level.write_level``, as training does) and a prepared table with
``--taxa`` test species in 2 classes; params are the repository's params.yaml with the options below.

1. **this stage**: ``taxadiffusion.sampling.generate.generate`` end to end (model loading, plan, sampling, PNG
   writes, manifest), ``--taxa x --images`` images, PNDM, TaxaGuide scale 6.
2. **reference**: the official inference style (docs/method.md §3 "Generation loop"): one taxon at a time, the
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
import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from taxadiffusion.config import Params, params_from_dict, read_params_dict  # noqa: E402
from taxadiffusion.core.device import default_device  # noqa: E402
from taxadiffusion.models.base import load_base  # noqa: E402
from taxadiffusion.models.conditioner import TaxonomyConditioner, lineage_texts
from taxadiffusion.models.level import LevelConfig, build_level_model, write_level  # noqa: E402
from taxadiffusion.models.text_cache import TextEmbeddingCache
from taxadiffusion.sampling.generate import generate  # noqa: E402
from taxadiffusion.training.specs import progressive_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_params(args) -> Params:
    """The repository's params.yaml on the shipped tiny base, with the benchmark's plan and sampler."""
    data = read_params_dict(REPO / "params.yaml")
    data.update(seed=0, num_inference_steps=args.steps, guidance_scale=6.0)
    # the condition module of tests/helpers/models.py (1 layer, ff 64), as the committed measurements used
    data["model"].update(pretrained=str(REPO / "assets" / "tiny-base"), cond_layers=1, cond_ff=64)
    data["generate"].update(sampler="pndm", guidance="taxaguide", batch_size=args.batch_size, target_level="species",
                            images_per_species=args.images, max_species_per_class=400)
    return params_from_dict(data)


def setup(root: Path, params: Params, n_taxa: int) -> None:
    """``--taxa`` test species in 2 classes, and a species-level folder with random non-zero LoRA weights."""
    levels = params.level_names
    rows = []
    for t in range(n_taxa):
        names = [f"Class{t % 2}", f"Order{t % 2}", f"Family{t % 4}", f"Genus{t % 8}", f"Genus{t % 8} sp{t}"]
        rows.append({"path": f"img{t}.png", **dict(zip(levels, names)), "split": "test", "row": t + 1})
    (root / "prepared").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(root / "prepared" / "table.parquet", index=False)
    spec = progressive_spec(params.train, levels, levels[-1])
    config = dataclasses.replace(LevelConfig.for_run(spec, params.train, params.model, levels, params.seed, None),
                                 lora_rank=params.train.lora_rank, lora_alpha=params.train.lora_alpha)
    unet, conditioner = build_level_model(load_base(params.model), config, None)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)  # peft leaves B at zero: a LoRA that changes the UNet
    write_level(root / "models" / "species", config, unet, conditioner)


def run_stage(root: Path, params: Params) -> float:
    """What stages/generate.py runs."""
    start = time.perf_counter()
    summary = generate(params.generate, params.sampling, params.experiment, root / "models" / "species",
                       root / "prepared", root / "generated")
    seconds = time.perf_counter() - start
    assert summary["drawn_here"] == summary["images"], summary
    return seconds


def run_reference(root: Path, params, mode: str) -> float:
    """One taxon at a time through a stock StableDiffusionPipeline (timed from the first taxon), on the device the
    stage samples on (``default_device()``: the GPU when there is one)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    level_dir = root / "models" / "species"
    levels = params.level_names
    device = default_device()
    base = load_base(params.model, device=device)
    sched_config = {k: v for k, v in base.scheduler_config.items() if k != "_class_name"}
    pipe = StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        scheduler=PNDMScheduler.from_config(sched_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(level_dir))
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)  # the LoRA layers too
    conditioner = TaxonomyConditioner.load(level_dir).eval().to(device)
    cache = TextEmbeddingCache(base.text_encoder, base.tokenizer, device=device)
    manifest = pd.read_csv(root / "generated" / "manifest.csv", dtype={"seed": int}, keep_default_na=False)
    out = root / "reference"
    k = len(levels) - 1
    start = time.perf_counter()
    for _, group in manifest.groupby("taxon", sort=True):
        lin = {lv: group.iloc[0][lv] for lv in levels}
        with torch.no_grad():
            hidden = cache.lineages([lineage_texts(levels, lin, k, species_text="as_written")])
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
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare_first(root: Path) -> str:
    """Max |pixel difference| between the stage's and the reference's first image (same seed)."""
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
    logging.basicConfig(level=logging.WARNING)
    n = args.taxa * args.images
    print(f"settings: tiny preset (32 px), {args.taxa} taxa x {args.images} images = {n}, PNDM {args.steps} steps, "
          f"TaxaGuide scale 6, fp32 on {default_device()} (both sides), {args.threads} torch threads, stage "
          f"batch_size {args.batch_size}, reference {args.reference}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = make_params(args)
        setup(root, params, args.taxa)
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
