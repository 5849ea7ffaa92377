"""The supplement's figures (S2 embeddings, S5 guidance scales, S6 attention per level) and training previews,
on the tiny base with a real saved level folder (random modules) and a small prepared table + shards."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import yaml
from helpers.models import LEVELS, TINY_BASE, lineage, make_level_dir, make_prepared, tiny_model_config
from helpers.params import make_params, params_dict
from helpers.stages import run_stage_here
from PIL import Image

from taxadiffusion.config import Experiment, FiguresConfig, PreviewConfig, section_from_dict
from taxadiffusion.core.errors import UserError
from taxadiffusion.figures import FIGURE_FILES, FIGURES_FILE
from taxadiffusion.figures.attention import LevelAttention, attention_maps, level_contexts, name_token_weights
from taxadiffusion.figures.build import FigurePaths, make_figures
from taxadiffusion.figures.guidance import draw_scales
from taxadiffusion.figures.select import read_table, real_images, round_robin, sibling_taxa
from taxadiffusion.models.taxa import load_taxa_model
from taxadiffusion.report import build as report
from taxadiffusion.sampling.denoise import make_scheduler, sample, to_uint8
from taxadiffusion.sampling.level_sampler import load_sampler
from taxadiffusion.training.previews import preview_batch, preview_grid, preview_name

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

# (class, order, family, genus, epithet, training images); one test image each
SPECIES = [
    ("Aves", "Passeriformes", "Corvidae", "Corvus", "corax", 5),
    ("Aves", "Passeriformes", "Corvidae", "Corvus", "corone", 3),
    ("Aves", "Passeriformes", "Corvidae", "Corvus", "monedula", 2),
    ("Aves", "Passeriformes", "Paridae", "Parus", "major", 4),
    ("Reptilia", "Squamata", "Lacertidae", "Lacerta", "viridis", 3),
    ("Reptilia", "Squamata", "Lacertidae", "Lacerta", "agilis", 2),
    ("Reptilia", "Squamata", "Boidae", "Boa", "constrictor", 1),
    ("Mammalia", "Carnivora", "Felidae", "Felis", "catus", 2),
]
ROWS = [row for *names, n in SPECIES for row in [(lineage(*names), "train")] * n + [(lineage(*names), "test")]]


def figures_cfg(**overrides) -> FiguresConfig:
    values = {"embedding_level": "family", "tsne_perplexity": 30, "guidance_scales": [0, 2, 6], "guidance_species": 4,
              "real_images": 2, "attention_species": 2, "tile": 48}
    return FiguresConfig(**{**values, **overrides})


def write_world_shards(shards: Path, rows, res: int = 32) -> Path:
    """``data/shards`` for ``rows`` (docs/architecture.md ``shard``): a flat colour per row."""
    index = {"levels": LEVELS, "resolution": res}
    for split in ("train", "test"):
        (shards / split).mkdir(parents=True, exist_ok=True)
        count = 0
        with wds.TarWriter(str(shards / split / "shard-000000.tar")) as sink:
            for i, (lin, s) in enumerate(rows):
                if s == split:
                    buf = io.BytesIO()
                    Image.fromarray(np.full((res, res, 3), (i * 37) % 256, np.uint8)).save(buf, format="PNG")
                    meta = {"lineage": lin, "row": i + 1, "path": f"img{i}.png"}
                    sink.write({"__key__": f"{i:09d}", "png": buf.getvalue(), "json": json.dumps(meta).encode()})
                    count += 1
        index[split] = {"shards": [f"{split}/shard-000000.tar"], "count": count}
    (shards / "index.json").write_text(json.dumps(index))
    return shards


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    make_prepared(root / "prepared", ROWS)
    write_world_shards(root / "shards", ROWS)
    make_level_dir(root / "models" / "species", level="species")
    return root


def params(**top):
    return make_params({"num_inference_steps": 3, "model.pretrained": str(TINY_BASE), "model.cond_layers": 1,
                        "model.cond_ff": 64, **top})


@pytest.fixture(scope="module")
def sampler(world):
    p = params()
    return load_sampler(world / "models" / "species", p.model, p.sampling, len(LEVELS) - 1, "cpu")


# ------------------------------------------------------------------------------------------------ selection


def test_selection_rules(world):
    table = read_table(world / "prepared", LEVELS)
    picked = round_robin(table, LEVELS, 4, 5)
    # classes in name order take turns; within a class, most training images first
    assert [p[-1] for p in picked] == ["Corvus corax", "Felis catus", "Lacerta viridis", "Parus major",
                                       "Lacerta agilis"]
    assert len(round_robin(table, LEVELS, 4, 100)) == len(SPECIES)
    group, taxa = sibling_taxa(table, LEVELS, 4, 2)
    assert group == ("Aves", "Passeriformes", "Corvidae", "Corvus") and [t[-1] for t in taxa] == ["Corvus corax",
                                                                                               "Corvus corone"]
    assert sibling_taxa(table, LEVELS, 4, 4) is None and sibling_taxa(table, LEVELS, 0, 2) is None
    real = real_images(world / "shards", LEVELS, 4, picked[:2], 2)
    assert [len(v) for v in real.values()] == [2, 2] and real[picked[0]][0].shape == (32, 32, 3)
    assert len(real_images(world / "shards", LEVELS, 4, [picked[-1]], 9)[picked[-1]]) == 2  # all it has


def test_figures_params_are_checked():
    with pytest.raises(UserError, match=r"figures.guidance_scales\[1\]=-1.0: expected a number in \[0.0, inf\]"):
        figures_cfg(guidance_scales=[0, -1])
    with pytest.raises(UserError, match=r"figures.attention_species=1: expected an integer >= 2"):
        figures_cfg(attention_species=1)
    with pytest.raises(UserError, match=r"missing key\(s\) \['figures.tile'\]"):
        section_from_dict("figures", {k: v for k, v in vars(figures_cfg()).items() if k != "tile"})
    with pytest.raises(UserError, match=r"preview.steps=0"):
        PreviewConfig(every=5, taxa=2, per_taxon=1, sampler="pndm", steps=0, scale=2.0, guidance="taxaguide")


# ------------------------------------------------------------------------------------------------ sampling


def test_per_row_scales_equal_separate_runs(sampler):
    lin = {**ROWS[0][0]}
    seeds = [11]
    both = draw_scales(sampler, [lin], seeds, [0.0, 4.0])
    run_scale = sampler.sampling
    try:
        for j, scale in enumerate((0.0, 4.0)):
            sampler.sampling = dataclasses.replace(run_scale, scale=scale)
            assert torch.equal(both[j], sampler.draw([lin], seeds)[0]), scale
    finally:
        sampler.sampling = run_scale
    assert not torch.equal(both[0], both[1])


def test_level_attention_leaves_the_image_unchanged(sampler):
    model = sampler.model
    lins = [ROWS[0][0], ROWS[6][0]]
    contexts, weights = level_contexts(model, lins, 4)
    # the UNet's context is the sum of the per-level module outputs (docs/method.md §1.2)
    torch.testing.assert_close(contexts.sum(0), model.condition(lins, 4), rtol=1e-5, atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(5, 2))
    # the per-level logits add up to the real ones: to_k is linear without bias, no norm on the context
    cross = [m for n, m in model.base.unet.named_modules() if n.endswith("attn2")]
    assert cross and all(m.to_k.bias is None and m.norm_cross is None for m in cross)
    before = dict(model.base.unet.attn_processors)
    images, maps = attention_maps(sampler, lins, [3, 4])
    assert dict(model.base.unet.attn_processors) == before  # processors restored
    st = sampler.sampling
    pairs = [sampler.context(lin) for lin in lins]
    latents = sample(model.base.unet, make_scheduler(st.sampler, model.base.scheduler_config),
                     torch.cat([c for c, _ in pairs]), torch.cat([n for _, n in pairs]), [3, 4], sampler.latent_shape,
                     st.steps, st.scale, st.guidance_range)
    assert torch.equal(images, to_uint8(model.base.decode_latents(latents)))
    side = sampler.latent_shape[-1]
    assert maps.shape == (5, 2, side, side) and np.isfinite(maps).all() and (maps >= 0).all()
    assert not np.allclose(maps[0], maps[4])


def test_name_token_weights(sampler):
    tok = sampler.model.cache.tokenizer
    w = name_token_weights(tok, ["family: Corvidae", "specific_epithet: corax"])
    for row, text, key in ((0, "family: Corvidae", "family:"), (1, "specific_epithet: corax", "specific_epithet:")):
        ids = tok(text).input_ids
        start, end = len(tok(key).input_ids) - 1, len(ids) - 1  # after BOS + key, before EOS
        expected = torch.zeros(tok.model_max_length)
        expected[start:end] = 1.0 / (end - start)
        assert torch.allclose(w[row], expected), text


def test_recording_processor_only_wraps_cross_attention(sampler):
    unet = sampler.model.base.unet
    contexts, weights = level_contexts(sampler.model, [ROWS[0][0]], 4)
    with LevelAttention(unet, contexts, weights, side=8):
        wrapped = {n for n, p in unet.attn_processors.items() if type(p).__name__ == "RecordingProcessor"}
    assert wrapped and all(n.endswith("attn2.processor") for n in wrapped)


# ------------------------------------------------------------------------------------------------ previews


def test_preview_grid_restores_modes_and_repeats(world):
    model = load_taxa_model(world / "models" / "species", tiny_model_config())
    model.conditioner.train()
    table = read_table(world / "prepared", LEVELS)
    lineages = table[table["split"] == "train"][LEVELS].to_dict("records")
    taxa, seeds = preview_batch(lineages, LEVELS, 2, 0, 3, 2)
    assert [t["family"] for t in taxa[::2]] == ["Corvidae", "Felidae", "Lacertidae"]
    assert taxa[0]["genus"] == "None" and seeds[0] != seeds[1] and len(seeds) == 6
    cfg = PreviewConfig(every=5, taxa=3, per_taxon=2, sampler="pndm", steps=3, scale=2.0, guidance="taxaguide")
    rng = torch.random.get_rng_state()
    first = preview_grid(model, 2, taxa, seeds, cfg.sampling, title="family, step 5")
    assert torch.equal(rng, torch.random.get_rng_state())  # the training RNG stream is untouched
    assert model.conditioner.training and not model.base.unet.training
    again = preview_grid(model, 2, taxa, seeds, cfg.sampling, title="family, step 5")
    assert np.array_equal(np.asarray(first), np.asarray(again)) and first.height > 3 * 64
    assert preview_name(50) == "preview/step-000050.png"


# ------------------------------------------------------------------------------------------------ the stage


def test_make_figures_writes_every_figure(world, tmp_path):
    p = params()
    out = tmp_path / "figures"
    exp = Experiment(p.model, LEVELS, 0)
    paths = FigurePaths(model=world / "models" / "species", prepared=world / "prepared", shards=world / "shards",
                        out=out)
    info = make_figures(figures_cfg(), p.sampling, exp, "species", paths, device="cpu")
    assert json.loads((out / FIGURES_FILE).read_text()) == json.loads(json.dumps(info))
    for key, name in FIGURE_FILES.items():
        assert Image.open(out / name).size[0] > 100, key
    assert info["s2"]["n_taxa"] == 5 and info["s2"]["n_classes"] == 3
    assert all(v is not None for part in ("text_encoder", "condition_module")
               for v in info["s2"][part]["silhouette"].values())
    assert len(info["s5"]["taxa"]) == 4 and info["s5"]["scales"] == [0.0, 2.0, 6.0]
    assert info["s6"]["group"] == "Aves/Passeriformes/Corvidae/Corvus"
    for key in ("s2", "s5", "s6"):  # the report captions the real figures.json
        html = report._supplement_figure(out, key)
        assert f"supplement Fig. {key.upper()}" in html and "<img" in html, key
    # a world without two test species of one genus: S6 is skipped with the reason, the rest is drawn
    info = make_figures(figures_cfg(attention_species=4, embedding_level="class"), p.sampling, exp, "species", paths,
                        "cpu")
    assert "no genus with 4 or more test taxa" in info["s6"]["skipped"]
    assert "only 3 taxa of level 'class'" in info["s2"]["skipped"] and not (out / FIGURE_FILES["s6"]).exists()


def test_figures_stage_errors_are_one_line(world, tmp_path, monkeypatch, capsys):
    data = params_dict({"model.pretrained": str(TINY_BASE)})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, err = run_stage_here("figures.py", "--params", path, "--model", tmp_path / "nothing", "--prepared",
                               world / "prepared", "--shards", world / "shards", "--out", tmp_path / "out",
                               monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.strip().count("\n") == 0, err
    if "figures" in data:  # params.yaml has the section: the missing model is named
        assert "train_config.json: missing" in err
    else:  # until params.yaml has it (docs/figures.md lists the keys)
        assert "no 'figures' section" in err
