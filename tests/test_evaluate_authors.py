"""``evaluate.protocol: authors`` (the co-author's evaluation scripts, docs/method.md §5 "Two protocols") next to the
default ``heldout``: Inception's pytorch-fid input path, and both protocols end to end on a FishNet-shaped table
(tests/fixtures/fishnet_sample.csv's header and quirks) through prepare, shard and the probe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.backbones import write_random_alexnet, write_random_inception
from helpers.metrics_world import write_fishnet_images, write_generated_set
from helpers.params import make_params

from taxadiffusion.data.prepare import prepare
from taxadiffusion.data.shard import write_shards
from taxadiffusion.metrics.backbones import InceptionBackbone, inception_body, pytorch_fid_pool3
from taxadiffusion.metrics.evaluate import EvaluatePaths, evaluate
from taxadiffusion.metrics.probe import fit_probe_on_shards

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("inception") / "inception.pth")


def test_pytorch_fid_input_path(inception):
    tf1 = InceptionBackbone(str(inception))
    pt = InceptionBackbone(str(inception), pytorch_fid=True)
    assert tf1.cache_id != pt.cache_id and pt.info["resize"].startswith("pytorch-fid")
    images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():
        # the body is torch-fidelity's own forward after its resize (none at 299) and its (x - 128) / 128
        assert torch.allclose(inception_body(tf1.net, (x.float() - 128) / 128), tf1.net(x)[0], atol=1e-4)
        # pytorch-fid: bilinear (align_corners=False) from [0, 1], then 2x - 1
        big = torch.nn.functional.interpolate(x.float(), size=(512, 512), mode="nearest").to(torch.uint8)
        small = torch.nn.functional.interpolate(big.float() / 255, size=(299, 299), mode="bilinear",
                                                align_corners=False)
        assert torch.allclose(pytorch_fid_pool3(pt.net, big), inception_body(pt.net, 2 * small - 1), atol=1e-5)
    assert pt.features(images[:1]).shape == (1, 2048)


@pytest.fixture(scope="module")
def fishnet(tmp_path_factory):
    """FishNet's CSV through prepare (Actinopterygii -> Actinopteri, drops counted) and shard at 16 px with
    ``dataset.preprocess: resize`` (the stretch the authors' protocol assumes): four species, each with one train
    and one test image; three generated images per species."""
    root = tmp_path_factory.mktemp("fishnet")
    params = make_params({"dataset": {"name": "fishnet", "metadata": str(FIX / "fishnet_sample.csv"),
                                      "images": str(write_fishnet_images(root / "images")), "resolution": 16,
                                      "preprocess": "resize", "synonyms": {"class": {"Actinopterygii": "Actinopteri"}}},
                          "prepare": {"check_images": "header"},
                          "probe": {"steps": 30, "batch_size": 8, "lr": 0.003, "width": 8}})
    prepare(params.dataset, params.prepare, params.level_names, root / "prepared", show_progress=False)
    write_shards(params.dataset, params.shard, params.level_names, root / "prepared", root / "shards",
                 show_progress=False)
    fit_probe_on_shards(root / "shards", root / "probe", params.level_names, params.probe, params.seed)
    lineages = [tuple(lin) for lin in json.loads((root / "prepared" / "taxonomy.json").read_text())["lineages"]]
    rng = np.random.default_rng(0)
    gen = write_generated_set(root, [(lin, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
                                     for lin in lineages for _ in range(3)])
    return root, params.level_names, lineages, gen


@pytest.mark.parametrize("protocol", ["heldout", "authors"])
def test_both_protocols_on_a_fishnet_shaped_table(fishnet, inception, tmp_path, protocol):
    root, levels, lineages, gen = fishnet
    assert len(lineages) == 4 and sorted({lin[0] for lin in lineages}) == ["Actinopteri", "Dipneusti"]
    cfg = make_params({"evaluate": {
        "backbones": ["probe", "inception", "alex"], "lpips_net": "alex", "protocol": protocol,
        "inception_weights": str(inception), "lpips_weights": str(write_random_alexnet(tmp_path / "alex.pth")),
        "min_images_for_fid": 2, "batch_size": 8}}).evaluate
    summary = evaluate(cfg, levels, EvaluatePaths(root / "shards", gen, root / "probe", tmp_path / "m",
                                                  tmp_path / "features"))
    data, fish = summary["data"], summary["per_class"]["Actinopteri"]
    authors = protocol == "authors"
    assert data["protocol"] == protocol and data["shards_preprocess"] == "resize"
    assert data["real_split"] == ("train+test" if authors else "test")
    assert data["comparison_size"] == ([512, 512] if authors else [16, 16])
    # reference: every real image of the class (authors) or its test images; 3 species x 3 generated images
    assert (fish["n_generated"], fish["n_real"]) == (9, 6 if authors else 3)
    # pairs: authors real_i with generated_i per species, min(2, 3) each; heldout every generated image
    assert fish["probe"]["pairs"] == fish["alex"]["pairs"] == (6 if authors else 9)
    assert fish["inception"]["fid"] is not None and fish["alex"]["lpips"] > 0
    assert summary["backbones"]["inception"]["resize"].startswith("pytorch-fid" if authors else "tf1")
    assert summary["backbones"]["alex"]["pairing"].startswith("within each drawn taxon" if authors else "every")
    # the ceiling: the 4 real test images, whatever the reference
    ceiling = summary["overall"]["probe"]["real_acc_by_rarity"]
    assert sum(b["n_images"] for b in ceiling.values()) == 4
    note = (tmp_path / "m" / "class_metrics.md").read_text()
    assert ("real_i with generated_i within each species" in note) == authors
    from taxadiffusion.report.build import build_report

    page = build_report(tmp_path / "m", tmp_path / "index.html").read_text()
    assert ("<code>evaluate.protocol: authors</code>, the co-author's evaluation scripts" in page) == authors
    assert "# pairs" in page and "1-cos div. generated (probe)" in page
