"""A trained level used from stock diffusers (docs/diffusers.md): ``StableDiffusionPipeline`` + ``load_lora_weights``
+ the saved condition module draw the same pixels as our ``draw`` / ``generate`` (within 1 uint8 level).

The base is a miniature Stable Diffusion in the real diffusers layout (``save_pretrained``: a small
``UNet2DConditionModel``, ``AutoencoderKL``, the tiny base's CLIP text encoder and tokenizer, SD1.5's PNDM
scheduler config from ``assets/sd15``), loaded by our ``sd15`` preset as any local SD folder is.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from helpers.params import make_params, section
from helpers.sd15 import SMALL_RESOLUTION, make_small_sd15

from taxadiffusion.config import Experiment
from taxadiffusion.core.lineage import image_seed, lineage_key
from taxadiffusion.models.base import load_base
from taxadiffusion.models.level import LevelConfig, build_level_model, write_level
from taxadiffusion.sampling.draw import draw_grid
from taxadiffusion.training.specs import progressive_spec

REPO = Path(__file__).resolve().parents[1]
LEVELS = ["class", "order", "family", "genus", "species"]
LINEAGE = ["Actinopteri", "Perciformes/Scorpaenoidei", "Scorpaenidae", "Scorpaenopsis", "Scorpaenopsis obtusa"]
RESOLUTION = SMALL_RESOLUTION  # 8 x 8 latents, a VAE with one 2x downsampling


def mini_model_config(folder: Path):
    """params.yaml's model section on the miniature SD folder (the ``sd15`` preset), a one-layer module."""
    return section("model", {"preset": "sd15", "pretrained": str(folder), "cond_layers": 1, "cond_heads": 4,
                             "cond_ff": 64})


def make_sd_level_dir(directory: Path, model_cfg, species_text: str = "as_written", seed: int = 0) -> Path:
    """A trained-level folder (``models/species``) on ``model_cfg``'s base, as tests/helpers/models.py makes one
    for the tiny base: a new condition module and a LoRA with non-zero ``B`` (peft's init leaves it zero)."""
    train_cfg = section("train", {"species_text": species_text})
    spec = progressive_spec(train_cfg, LEVELS, "species")
    config = dataclasses.replace(LevelConfig.for_run(spec, train_cfg, model_cfg, LEVELS, seed, parent=None),
                                 lora_rank=train_cfg.lora_rank, lora_alpha=train_cfg.lora_alpha)
    unet, conditioner = build_level_model(load_base(model_cfg), config, None)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    return write_level(directory, config, unet, conditioner)


def doc_namespace() -> dict:
    """The first python block of docs/diffusers.md, run as written: the test checks the documented code."""
    text = (REPO / "docs" / "diffusers.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "docs/diffusers.md", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("stock")
    sd = make_small_sd15(root / "mini-sd")
    model_cfg = mini_model_config(sd)
    return sd, model_cfg, make_sd_level_dir(root / "species", model_cfg)


@pytest.mark.parametrize("depth", [5, 1], ids=["species (negative: level 0 output)", "class (negative: 'class: None')"])
def test_stock_pipeline_draws_our_pixels(mini, depth):
    sd, model_cfg, level_dir = mini
    params = make_params({"num_inference_steps": 6, "guidance_scale": 3})
    names, n = LINEAGE[:depth], 3
    ours = draw_grid(names, n, level_dir, Experiment(model_cfg, LEVELS, params.seed), params.sampling, device="cpu",
                     zoom=1)
    ours = np.asarray(ours).reshape(RESOLUTION, n, RESOLUTION, 3).transpose(1, 0, 2, 3)  # the 1 x n grid's tiles

    docs = doc_namespace()
    pipe = StableDiffusionPipeline.from_pretrained(sd, safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(level_dir))
    lineage = dict(zip(LEVELS, names))
    cond, neg = docs["taxadiffusion_embeds"](pipe, level_dir, lineage, cut_off=depth - 1)
    seeds = [image_seed(params.seed, lineage_key(names), i) for i in range(n)]
    stock = pipe(prompt_embeds=cond.expand(n, -1, -1), negative_prompt_embeds=neg.expand(n, -1, -1),
                 guidance_scale=params.sampling.scale, num_inference_steps=params.sampling.steps,
                 generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], height=RESOLUTION,
                 width=RESOLUTION).images
    stock = np.stack([np.asarray(image) for image in stock])
    assert stock.shape == ours.shape == (n, RESOLUTION, RESOLUTION, 3)
    diff = np.abs(stock.astype(int) - ours.astype(int))
    assert diff.max() <= 1, f"max {diff.max()} uint8 levels apart"
    assert ours.std() > 5 and len({ours[i].tobytes() for i in range(n)}) == n  # real, distinct images


def test_documented_texts_are_the_trained_ones(mini, tmp_path):
    from taxadiffusion.models.taxa import load_taxa_model

    _, model_cfg, level_dir = mini
    docs = doc_namespace()
    lineage = dict(zip(LEVELS, LINEAGE))
    for species_text, last in (("as_written", "specific_epithet: Scorpaenopsis obtusa"),
                               ("epithet", "specific_epithet: obtusa")):
        folder = level_dir
        if species_text == "epithet":
            folder = tmp_path / "epithet"
            shutil.copytree(level_dir, folder)
            config = dataclasses.replace(LevelConfig.load(folder), species_text="epithet")
            config.save(folder)
        model = load_taxa_model(folder, model_cfg)
        assert docs["condition_texts"](folder, lineage, 4) == model.texts(lineage, 4)
        assert model.texts(lineage, 4)[-1] == last
