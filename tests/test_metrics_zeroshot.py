"""BioCLIP zero-shot top-1 / top-5 per level, closed-set over the dataset's species, through open_clip's real
``local-dir:`` loader with a tiny random model (no mocks): the numbers against a hand computation, and the
``evaluate`` outputs (generated images, the real test ceiling, by rarity, per level, the tables)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

import open_clip  # noqa: E402
from helpers.backbones import write_tiny_clip  # noqa: E402
from helpers.metrics_world import LEVELS, metrics_params, write_generated, write_shards  # noqa: E402

from taxadiffusion.metrics.bioclip import BioCLIPScorer  # noqa: E402
from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate  # noqa: E402
from taxadiffusion.metrics.probe import fit_probe_on_shards  # noqa: E402
from taxadiffusion.metrics.zeroshot import ZeroShot, candidates  # noqa: E402

SPECIES = [("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus corax"),
           ("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus monedula"),
           ("Aves", "Passeriformes", "Paridae", "Parus", "Parus major"),
           ("Reptilia", "Squamata", "Boidae", "Boa", "Boa constrictor")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-bioclip")


def test_closed_set_probabilities_summed_per_rank(clip):
    scorer = BioCLIPScorer(f"local-dir:{clip}", "{lineage}", LEVELS)
    zs = ZeroShot(scorer, candidates(SPECIES + [("Aves", "None", "None", "None", "None")], 5), "tree_of_life", LEVELS)
    assert zs.species == sorted(SPECIES)  # partial lineages are no candidates
    assert zs.info["prompt_example"] == "a photo of Aves Passeriformes Corvidae Corvus corax."
    images = np.random.default_rng(1).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    drawn = [SPECIES[0], SPECIES[2], SPECIES[3], ("Aves", "Passeriformes", "Corvidae", "Corvus", "None"),
             ("Aves", "Passeriformes", "Corvidae", "Corvus", "Corvus cornix"), SPECIES[1]]
    top1, top5 = zs.hits(scorer.image_embeddings(images, batch_size=4), drawn)

    # By hand, from an independently loaded copy: softmax over the 4 species, summed per genus and per class.
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip}")
    prompts = [f"a photo of {' '.join(lin[:4])} {lin[4].split()[1]}." for lin in sorted(SPECIES)]
    with torch.no_grad():
        img = model.eval().encode_image(torch.stack([preprocess(Image.fromarray(a)) for a in images]))
        txt = model.encode_text(tokenizer(prompts))
    cos = (img / img.norm(dim=-1, keepdim=True)) @ (txt / txt.norm(dim=-1, keepdim=True)).T
    probs = torch.softmax(model.logit_scale.exp().detach() * cos, dim=1).numpy()
    species = sorted(SPECIES)
    genera = sorted({s[:4] for s in species})
    by_genus = np.stack([probs[:, [s[:4] == g for s in species]].sum(1) for g in genera], axis=1)
    by_class = np.stack([probs[:, [s[0] == c for s in species]].sum(1) for c in ("Aves", "Reptilia")], axis=1)
    for row, lin in enumerate(drawn):
        if lin in species:
            assert top1[row, 4] == (probs[row].argmax() == species.index(lin))
        assert top1[row, 3] == (by_genus[row].argmax() == genera.index(lin[:4]))
        assert top1[row, 0] == (by_class[row].argmax() == ("Aves", "Reptilia").index(lin[0]))
    assert top1[3, 4] == -1 and top1[3, 3] >= 0  # drawn at genus level: no species to judge
    assert top1[4, 4] == -1 and top1[4, 3] >= 0  # a species that is no candidate: judged above species only
    assert (top5[:, :4] == 1).all()  # 4 species, 3 genera, ...: every taxon is in the top 5
    assert (top5[[0, 1, 2, 5], 4] == 1).all() and (top1 <= top5).all()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    shards = write_shards(root)  # 6 train + 3 test images per species, 5 species in 2 classes
    gen = write_generated(root, n=2)
    params = metrics_params()
    fit_probe_on_shards(shards, root / "probe", LEVELS, params.probe, params.seed)
    return shards, gen, root / "probe"


@pytest.mark.parametrize("real_split", ["test", "train+test"])
def test_evaluate_reports_zero_shot_accuracy_and_its_ceiling(world, clip, tmp_path, real_split):
    shards, gen, probe = world
    cfg = metrics_params(backbones=["probe", "bioclip"], bioclip_model=f"local-dir:{clip}",
                         real_split=real_split).evaluate
    summary = evaluate(cfg, LEVELS, EvaluatePaths(shards, gen, probe, tmp_path / "metrics", tmp_path / "features"))
    aves = summary["per_class"]["Aves"]["bioclip-v1"]["zeroshot"]
    assert aves["n_real_test"] == 9  # the ceiling: real test images only, whatever the reference
    for key in ("top1", "top5", "real_test_top1", "real_test_top5"):
        assert set(aves[key]) == set(LEVELS) and all(0 <= v <= 1 for v in aves[key].values())
    assert aves["top5"]["species"] == 1.0  # five species: every one is in the top 5
    overall = summary["overall"]["bioclip-v1"]["zeroshot"]
    assert overall["n_real_test"] == 15
    assert overall["by_rarity"]["6-20"]["n_images"] == 10 and overall["real_by_rarity"]["6-20"]["n_images"] == 15
    assert overall["by_rarity"]["6-20"]["top1"] == overall["top1"]
    assert summary["per_level"]["genus"]["bioclip-v1"]["top1"] == overall["top1"]["genus"]
    assert summary["backbones"]["bioclip-v1"]["zeroshot"]["prompt"] == "tree_of_life"
    classes = pd.read_csv(tmp_path / "metrics" / "class_metrics.csv")
    assert {"Acc species top-1 (bioclip-v1)", "Acc species top-5 (bioclip-v1)",
            "Real test acc species top-1 (bioclip-v1)"} <= set(classes.columns)
    levels = pd.read_csv(tmp_path / "metrics" / "level_metrics.csv").set_index("Level")
    assert levels.loc["genus", "Acc top-1 (bioclip-v1)"] == pytest.approx(overall["top1"]["genus"])
    assert levels.loc["genus", "Real test acc top-5 (bioclip-v1)"] == pytest.approx(overall["real_test_top5"]["genus"])
    rarity = pd.read_csv(tmp_path / "metrics" / "rarity_metrics.csv").set_index("Training images per species")
    assert rarity.loc["6-20", "Acc species top-1 (bioclip-v1)"] == pytest.approx(overall["top1"]["species"])
    assert rarity.loc["6-20", "Real acc genus top-1 (bioclip-v1)"] == pytest.approx(overall["real_test_top1"]["genus"])
    assert "| Acc species top-1 (bioclip-v1) |" in (tmp_path / "metrics" / "rarity_metrics.md").read_text()
    # the report: the columns, and how to read them
    from taxadiffusion.report.build import build_report

    page = build_report(tmp_path / "metrics", tmp_path / "index.html").read_text()
    assert "Acc species top-1 (bioclip-v1)" in page and "Real acc genus top-1 (bioclip-v1)" in page
    assert "BioCLIP zero-shot over the dataset's 5 species of the shards" in page
