"""`taxadiffusion export`: a trained model as one self-contained folder (level files, taxonomy, export.json, the
tiny base, a sample grid, a model card) that draws, copied anywhere, the pixels `generate` drew; `--push-to-hub`
creates the repository and uploads that folder (only the network call itself is replaced)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.models import lineage, make_level_dir, make_prepared
from helpers.params import tiny_params, write_params
from helpers.stages import run_stage
from huggingface_hub import HfApi
from PIL import Image

from taxadiffusion.cli import main as taxadiffusion_main
from taxadiffusion.config import load_params
from taxadiffusion.core.errors import UserError
from taxadiffusion.sampling.draw import draw_grid
from taxadiffusion.tools.exported import draw_export, load_export

ROWS = [(lineage("Aves", "Passeriformes", "Paridae", "Parus", "major"), "test"),
        (lineage("Aves", "Passeriformes", "Paridae", "Parus", "major"), "train"),
        (lineage("Reptilia", "Squamata", "Lacertidae", "Lacerta", "viridis"), "test")]


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A workspace with a trained-level folder (random weights, written as train@species writes it), prepare's
    folder and params.yaml; no generated images, no metrics yet. The tools run from it, as a person would."""
    make_level_dir(tmp_path / "models" / "species")
    make_prepared(tmp_path / "data" / "prepared", ROWS)
    write_params(tmp_path, tiny_params(**{"num_inference_steps": 3}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_export_is_self_contained_and_checked_when_loaded(workspace, tmp_path_factory):
    taxadiffusion_main(["export", "--out", "export/species"])
    out = workspace / "export" / "species"
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"condition.safetensors", "condition_config.json", "pytorch_lora_weights.safetensors",
            "train_config.json", "taxonomy.json", "export.json", "README.md", "base/unet/config.json"} <= names
    card = (out / "README.md").read_text()
    assert "Not evaluated at export" in card and "No generated images" in card and "samples.png" not in names
    assert "draw_export(\".\", 'Aves/Passeriformes/Paridae/Parus/Parus major', n=4)" in card

    elsewhere = tmp_path_factory.mktemp("clean") / "model"  # another machine: no workspace, no repo assets
    shutil.copytree(out, elsewhere)
    shutil.rmtree(workspace / "export")
    params = load_params(workspace / "params.yaml")
    model = load_export(elsewhere)
    assert model.experiment.model.pretrained == str((elsewhere / "base").resolve())
    names = ["Reptilia", "Squamata", "Lacertidae", "Lacerta", "Lacerta viridis"]
    ours = draw_grid(names, 2, workspace / "models" / "species", params.experiment, params.sampling, device="cpu",
                     zoom=1)
    theirs = draw_export(elsewhere, "Reptilia/Squamata/Lacertidae/Lacerta/viridis", n=2, device="cpu")
    assert np.array_equal(np.asarray(ours), np.asarray(theirs)) and np.asarray(ours).std() > 1

    with open(elsewhere / "pytorch_lora_weights.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    with pytest.raises(UserError, match="pytorch_lora_weights.safetensors: missing or changed since export"):
        load_export(elsewhere)


def test_push_to_hub_uploads_the_folder(workspace, monkeypatch):
    """Offline up to the network: the real HfApi methods are replaced by recorders, nothing else."""
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    taxadiffusion_main(["export", "--out", "shared", "--push-to-hub", "someone/fish-taxadiffusion", "--private"])
    (create, repo, kw), (upload, repo2, up) = calls
    assert (create, repo, kw["repo_type"], kw["private"], kw["exist_ok"]) == ("create", "someone/fish-taxadiffusion",
                                                                             "model", True, True)
    assert (upload, repo2, up["repo_type"]) == ("upload", "someone/fish-taxadiffusion", "model")
    assert Path(up["folder_path"]) == workspace / "shared" and (workspace / "shared" / "export.json").is_file()


def test_push_failure_is_one_line_and_keeps_the_folder(workspace, monkeypatch, capsys):
    def offline(self, repo_id, **kw):
        raise OSError("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    with pytest.raises(SystemExit) as exc:
        taxadiffusion_main(["export", "--out", "shared", "--push-to-hub", "someone/x"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.count("\n") == 0 and err.startswith("error: --push-to-hub someone/x:")
    assert "hf upload someone/x" in err and (workspace / "shared" / "README.md").is_file()


def test_a_baseline_folder_is_refused(workspace, capsys):
    config = json.loads((workspace / "models" / "species" / "train_config.json").read_text())
    config["prompt_only"] = True
    (workspace / "models" / "species" / "train_config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit):
        taxadiffusion_main(["export", "--out", "x"])
    assert "not a TaxaDiffusion level" in capsys.readouterr().err and not (workspace / "x").exists()


def _stage_args(level: str, parent: str) -> list[str]:
    return ["--level", level, "--parent", f"models/{parent}", "--out", f"models/{level}", "--shards", "data/shards",
            "--latents", "data/latents", "--scratch", f"scratch/train/{level}", "--log-dir", f"metrics/train/{level}"]


@pytest.mark.slow
def test_exported_pipeline_model_draws_the_generated_pixels_from_a_clean_directory(data_workspace, tmp_path,
                                                                                  monkeypatch):
    """The real stages on a small synthetic world (five levels, generate, probe, evaluate), then export; the folder,
    copied elsewhere and loaded from there, draws every generated image of a taxon bit for bit."""
    work = tmp_path / "w"
    shutil.copytree(data_workspace, work)
    write_params(work, tiny_params(**{"generate.images_per_species": 2}))
    levels = list(tiny_params()["levels"])
    for level, parent in zip(levels, ["base", *levels]):
        run_stage("train.py", *_stage_args(level, parent), cwd=work)
    run_stage("generate.py", "--model", "models/species", "--prepared", "data/prepared", "--out", "data/generated",
              cwd=work)
    run_stage("probe.py", "--shards", "data/shards", "--out", "models/probe", cwd=work)
    run_stage("evaluate.py", "--shards", "data/shards", "--generated", "data/generated", "--probe", "models/probe",
              "--cache", str(tmp_path / "features"), "--out", "metrics", cwd=work)
    monkeypatch.chdir(work)
    taxadiffusion_main(["export", "--out", str(tmp_path / "export")])
    card = (tmp_path / "export" / "README.md").read_text()
    assert (work / "metrics" / "class_metrics.md").read_text().strip() in card
    assert "![samples](samples.png)" in card and Image.open(tmp_path / "export" / "samples.png").width > 0

    clean = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "export", clean / "model")
    monkeypatch.chdir(clean)
    manifest = pd.read_csv(work / "data" / "generated" / "manifest.csv")
    for taxon in sorted(manifest["taxon"].unique())[:2]:
        rows = manifest[manifest["taxon"] == taxon].sort_values("index")
        names = [rows.iloc[0][lv] for lv in levels]
        grid = np.asarray(draw_export("model", names, n=len(rows), device="cpu"))
        tiles = grid.reshape(grid.shape[0], len(rows), -1, 3).transpose(1, 0, 2, 3)
        for tile, path in zip(tiles, rows["path"]):
            assert np.array_equal(tile, np.asarray(Image.open(work / "data" / "generated" / path).convert("RGB"))), path


def test_the_sd15_card_draws_with_stock_diffusers_what_draw_export_draws(tmp_path, monkeypatch):
    """The model card's Python blocks, run as written in the exported folder of an SD1.5-layout level (the
    miniature SD1.5 as model.pretrained), give draw_export's pixels within 1 uint8 level (docs/diffusers.md)."""
    import dataclasses
    import re

    import torch
    from helpers.params import section
    from helpers.sd15 import RESOLUTION, make_mini_sd15

    from taxadiffusion.models.base import load_base
    from taxadiffusion.models.level import LevelConfig, build_level_model, write_level
    from taxadiffusion.training.specs import progressive_spec

    model = {"preset": "sd15", "pretrained": str(make_mini_sd15(tmp_path / "mini-sd15")), "cond_layers": 1,
             "cond_heads": 4, "cond_ff": 64}
    model_cfg, train_cfg = section("model", model), section("train")
    levels = list(tiny_params()["levels"])
    config = dataclasses.replace(
        LevelConfig.for_run(progressive_spec(train_cfg, levels, "species"), train_cfg, model_cfg, levels, 0, None),
        lora_rank=train_cfg.lora_rank, lora_alpha=train_cfg.lora_alpha)
    unet, conditioner = build_level_model(load_base(model_cfg), config, None)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    write_level(tmp_path / "models" / "species", config, unet, conditioner)
    make_prepared(tmp_path / "data" / "prepared", ROWS)
    params = tiny_params(**{"num_inference_steps": 4, "guidance_scale": 3})
    params["model"].update(model)
    params["dataset"]["resolution"] = RESOLUTION
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    taxadiffusion_main(["export", "--out", "export"])

    card = (tmp_path / "export" / "README.md").read_text()
    assert "library_name: diffusers" in card and "base_model" not in card  # a local folder is no hub id
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 3 and "taxadiffusion_embeds" in blocks[1] and "load_lora_weights(folder)" in blocks[2]
    monkeypatch.chdir(tmp_path / "export")
    namespace: dict = {}
    exec(compile(blocks[1] + blocks[2], "README.md", "exec"), namespace)
    stock = np.stack([np.asarray(image) for image in namespace["images"]])
    ours = np.asarray(draw_export(".", "Aves/Passeriformes/Paridae/Parus/Parus major", n=4, device="cpu"))
    ours = ours.reshape(2, RESOLUTION, 2, RESOLUTION, 3).transpose(0, 2, 1, 3, 4).reshape(4, RESOLUTION, RESOLUTION, 3)
    assert stock.shape == ours.shape and np.abs(stock.astype(int) - ours.astype(int)).max() <= 1
    assert ours.std() > 5
