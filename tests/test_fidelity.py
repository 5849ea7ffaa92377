"""Method fidelity on real dataset layouts (issue 12): the official condition text per dataset, condition
dropout at its bound, the baselines' step budgets, and ``model.pretrained`` errors through the real loader."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from helpers.params import REPO, make_params, params_dict, section
from helpers.sd15 import make_small_sd15

from taxadiffusion.comparison.methods import method_spec
from taxadiffusion.config import params_from_dict, read_params_dict
from taxadiffusion.core.errors import UserError
from taxadiffusion.data import prepare as P
from taxadiffusion.models.base import load_base
from taxadiffusion.models.conditioner import ModelLevels, lineage_texts
from taxadiffusion.training.batches import drop_level
from taxadiffusion.training.specs import progressive_spec
from taxadiffusion.training.train import _condition_inputs

FIX = Path(__file__).parent / "fixtures"
LEVELS = ["class", "order", "family", "genus", "species"]
TINY = REPO / "assets" / "tiny-base"


# ---------------------------------------------------------------------------------------------- species text


def _preset(name: str, metadata: Path, images: Path) -> dict:
    """A preset (or params.yaml for ``None``) on a hand-made annotation file, image checks off."""
    data = read_params_dict(REPO / "presets" / f"{name}.yaml") if name else params_dict()
    data["dataset"].update(metadata=str(metadata), images=str(images))
    data["prepare"]["check_images"] = "none"
    return data


def _trained_texts(data: dict, out: Path) -> list[list[str]]:
    """The texts training conditions every kept train row on at the finest level (through ``prepare``'s
    table and the trainer's own text builder, dropout off)."""
    params = params_from_dict(data)
    P.prepare(params.dataset, params.prepare, params.level_names, out, show_progress=False)
    table = pd.read_parquet(out / "table.parquet")
    table = table[table["split"] == "train"]  # (each test file gives its species a second image: the test split's)
    lineages = [{lv: r[lv] for lv in params.level_names} for r in table.to_dict("records")]
    cfg = section("train", {**data["train"], "level_dropout": 0.0})
    spec = progressive_spec(cfg, params.level_names, params.level_names[-1])
    run = SimpleNamespace(spec=spec, levels=params.level_names, lineages=lineages, cfg=cfg,
                          cache=SimpleNamespace(lineages=lambda texts: texts))
    batch = {"lineages": lineages, "index": list(range(len(lineages)))}  # a micro-batch, dropout off
    return _condition_inputs(run, batch, spec.cut_off)


def test_fishnet_conditions_the_species_level_on_the_binomial_as_written(tmp_path):
    meta = tmp_path / "train.csv"
    header = (FIX / "fishnet_sample.csv").read_text().splitlines()[0]
    meta.write_text("\n".join([
        header,
        "0,870,Scorpaenopsis obtusa,https://www.fishbase.se/images/species/Scobt_u0.jpg,6523,Scorpaenopsis,"
        "Scorpaeninae,Scorpaenidae,Perciformes/Scorpaenoidei,Actinopteri,Osteichthyes,fishbase,Scorpaenidae,4.0,"
        "benthic,1,0,0,0,0,0,1,0,Perciformes,3",
        "2,871,Scorpaenopsis obtusa,https://www.fishbase.se/images/species/Scobt_u1.jpg,6523,Scorpaenopsis,"
        "Scorpaeninae,Scorpaenidae,Perciformes/Scorpaenoidei,Actinopteri,Osteichthyes,fishbase,Scorpaenidae,4.0,"
        "benthic,1,0,0,0,0,0,1,0,Perciformes,3",
        "1,5071,,3f2b8c1e-6d7a-4b8e-9a1c-2e5f7d9b0a11.jpg,1224,Zebrasoma,,Acanthuridae,Acanthuriformes,"
        "Actinopterygii,Osteichthyes,inat,Acanthuridae,2.0,benthic,1,0,0,0,0,0,1,0,Acanthuriformes,12",
    ]) + "\n")
    texts = _trained_texts(_preset("fishnet", meta, tmp_path), tmp_path / "out")
    assert texts == [
        ["class: Actinopteri", "order: Perciformes/Scorpaenoidei", "family: Scorpaenidae", "genus: Scorpaenopsis",
         "specific_epithet: Scorpaenopsis obtusa"],
        # the iNat-sourced row without a species: kept, as the official loader ("specific_epithet: None")
        ["class: Actinopteri", "order: Acanthuriformes", "family: Acanthuridae", "genus: Zebrasoma",
         "specific_epithet: None"],
    ]


def test_bioscan_conditions_the_species_level_on_the_binomial_as_written(tmp_path):
    fixture = (FIX / "BIOSCAN_Insect_Dataset_metadata.tsv").read_text().splitlines()
    header = fixture[0].split("\t")
    row = dict.fromkeys(header, "not_classified")
    row.update({"sampleid": "BIOUG71234-B05", "processid": "BIOSC777-21", "phylum": "Arthropoda",
                "class": "Insecta", "order": "Hymenoptera", "family": "Braconidae", "subfamily": "Microgastrinae",
                "genus": "Apanteles", "species": "Apanteles leucostigmus", "image_file": "BIOUG71234-B05.jpg",
                "chunk_number": "42"})
    meta = tmp_path / "BIOSCAN_Insect_Dataset_metadata.tsv"
    second = {**row, "sampleid": "BIOUG71234-B06", "processid": "BIOSC777-22", "image_file": "BIOUG71234-B06.jpg"}
    meta.write_text("\t".join(header) + "\n" + "".join("\t".join(r[h] for h in header) + "\n" for r in (row, second)))
    texts = _trained_texts(_preset("bioscan1m", meta, tmp_path), tmp_path / "out")
    assert texts == [["class: Insecta", "order: Hymenoptera", "family: Braconidae", "genus: Apanteles",
                      "specific_epithet: Apanteles leucostigmus"]]


def test_inat_conditions_the_species_level_on_the_epithet_alone(tmp_path):
    ranks = {"kingdom": "Animalia", "phylum": "Arthropoda", "class": "Insecta", "order": "Lepidoptera",
             "family": "Nymphalidae", "genus": "Danaus", "specific_epithet": "plexippus"}
    meta = tmp_path / "train.json"
    meta.write_text(json.dumps({
        "images": [{"id": i, "file_name": "train/06451_Animalia_Arthropoda_Insecta_Lepidoptera_Nymphalidae_Danaus_"
                                          f"plexippus/a{i}.jpg", "width": 40, "height": 30} for i in (7, 8)],
        "annotations": [{"id": i, "image_id": i, "category_id": 6451} for i in (7, 8)],
        "categories": [{"id": 6451, "name": "Danaus plexippus", "common_name": "Monarch",
                        "supercategory": "Insects", **ranks}],
    }))
    texts = _trained_texts(_preset("inat2021", meta, tmp_path), tmp_path / "out")
    assert texts == [["kingdom: Animalia", "phylum: Arthropoda", "class: Insecta", "order: Lepidoptera",
                      "family: Nymphalidae", "genus: Danaus", "specific_epithet: plexippus"]]


@pytest.mark.parametrize("name", ["synthetic", "table"])
def test_synthetic_and_table_condition_on_the_species_as_written(tmp_path, name):
    meta = tmp_path / "annotations.csv"
    columns = ["image", "class", "order", "family", "genus", "species"]
    if name == "table":
        columns = ["file", "Klasse", "order", "family", "genus", "species"]
    meta.write_text(",".join(columns) + "".join(f"\nimages/Gacisia/Ruvola_zetis_00{i}.png,Gacisia,Lomaformes,Ruvolidae,"
                                                "Ruvola,Ruvola zetis" for i in (0, 1)) + "\n")
    data = _preset(None, meta, tmp_path)
    data["dataset"]["name"] = name
    if name == "table":
        data["dataset"]["columns"] = {"image": "file", "class": "Klasse"}
    assert data["train"]["species_text"] == "as_written"
    texts = _trained_texts(data, tmp_path / "out")
    assert texts == [["class: Gacisia", "order: Lomaformes", "family: Ruvolidae", "genus: Ruvola",
                      "specific_epithet: Ruvola zetis"]]


def test_texts_need_the_species_text_unless_the_levels_carry_it():
    lineage = {"genus": "Danaus", "species": "Danaus plexippus"}
    with pytest.raises(TypeError, match=r"species_text=None: expected one of as_written, epithet"):
        lineage_texts(["genus", "species"], lineage)
    assert lineage_texts(ModelLevels(["genus", "species"], "epithet"), lineage)[-1] == "specific_epithet: plexippus"
    assert lineage_texts(["genus", "species"], lineage, 0, "as_written") == ["genus: Danaus", "specific_epithet: None"]
    with pytest.raises(UserError, match=r"train.species_text='binomial': expected one of as_written, epithet"):
        make_params({"train.species_text": "binomial"})


# ---------------------------------------------------------------------------------------------- dropout


def test_dropout_at_one_over_levels_drops_exactly_one_level_each_equally_often():
    n = 21_000
    lineages = [dict(zip(LEVELS, "ABCDE"))] * n

    def drop_levels(lineages, levels, p, gen):  # one uniform per sample, as training/batches.micro_batch draws it
        draws = torch.rand(len(lineages), generator=gen)
        return [drop_level(lin, levels, p, float(u)) for lin, u in zip(lineages, draws)]

    dropped = drop_levels(lineages, LEVELS, 1 / len(LEVELS), torch.Generator().manual_seed(0))
    nulled = [[lv for lv in LEVELS if lin[lv] is None] for lin in dropped]
    assert all(len(x) == 1 for x in nulled), "p = 1/L: every sample loses exactly one level"
    counts = pd.Series([x[0] for x in nulled]).value_counts()
    assert set(counts.index) == set(LEVELS)
    assert (counts - n / len(LEVELS)).abs().max() < 4 * (n * 0.2 * 0.8) ** 0.5  # 4 sigma of a binomial
    # the paper's 1/21: about 5/21 of the samples lose one level, never two
    dropped = drop_levels(lineages, LEVELS, 1 / 21, torch.Generator().manual_seed(1))
    lost = pd.Series([sum(lin[lv] is None for lv in LEVELS) for lin in dropped])
    assert lost.max() == 1 and abs(lost.mean() - 5 / 21) < 0.02
    with pytest.raises(UserError, match=r"train.level_dropout=0.25: expected a probability per level in \[0, 1/5\]"):
        make_params({"train.level_dropout": 0.25})


# ---------------------------------------------------------------------------------------------- budgets


def test_baseline_budget_equal_or_the_papers():
    equal = section("train", {"steps": 250_000, "baseline_budget": "equal"})
    paper = section("train", {"steps": 250_000, "baseline_budget": "paper"})
    steps = {b: {m: method_spec(cfg, LEVELS, m).steps for m in ("lora", "full", "joint", "random_level")}
             for b, cfg in (("equal", equal), ("paper", paper))}
    assert steps["equal"] == dict.fromkeys(steps["equal"], 1_250_000)
    assert steps["paper"] == {"lora": 250_000, "full": 100_000, "joint": 1_250_000, "random_level": 1_250_000}
    assert method_spec(section("train", {"steps": 150, "baseline_budget": "paper"}), LEVELS, "full").steps == 60
    for preset in ("fishnet", "bioscan1m", "inat2021"):
        assert read_params_dict(REPO / "presets" / f"{preset}.yaml")["train"]["baseline_budget"] == "paper"


def test_methods_table_says_which_budget_trained_the_baselines(tmp_path):
    from taxadiffusion.comparison.sample import METHOD_FILE, SamplePaths, sample_method
    from taxadiffusion.comparison.table import TableSetting, compare
    from taxadiffusion.comparison.train import train_method
    from taxadiffusion.config import Experiment
    from taxadiffusion.training.train import TrainPaths

    methods = tmp_path / "metrics" / "methods"
    cfg = section("train", {"baseline_budget": "paper"})
    summary = {"overall": {"probe": {"fid": 7.5, "dist": 0.4, "acc": {lv: 0.5 for lv in LEVELS}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    model_cfg = section("model", {"pretrained": str(TINY)})
    for method in ("taxadiffusion", "sd"):  # no training of their own: method.json without a budget
        paths = TrainPaths(parent=None, out=tmp_path / "models" / method, shards=tmp_path, latents=tmp_path,
                           scratch=tmp_path / "s", log_dir=tmp_path / "log")
        model = train_method(method, cfg, Experiment(model_cfg, LEVELS, 0), paths, section("compute"))
        (methods / method).mkdir(parents=True)
        (methods / method / "summary.json").write_text(json.dumps(summary))
        shutil.copy(model / METHOD_FILE, methods / method / METHOD_FILE)
    paths = SamplePaths(model=tmp_path / "models" / "taxadiffusion", final=tmp_path, prepared=tmp_path,
                        shards=tmp_path, probe=tmp_path, main_summary=tmp_path / "summary.json", cache=tmp_path,
                        images=tmp_path / "images", out=methods / "taxadiffusion")
    (methods / "taxadiffusion" / METHOD_FILE).unlink()  # written by method@taxadiffusion itself
    params = make_params()
    sample_method("taxadiffusion", params.generate, params.sampling, params.evaluate,
                  Experiment(model_cfg, LEVELS, 0), paths)
    (methods / "lora").mkdir()
    (methods / "lora" / "summary.json").write_text(json.dumps(summary))
    (methods / "lora" / METHOD_FILE).write_text(json.dumps({"method": "lora", "train_steps": 150, "budget": "paper"}))
    synthetic = TableSetting("synthetic", 32, "tiny", "assets/tiny-base", 150)
    table = compare(["taxadiffusion", "sd", "lora"], LEVELS, methods, tmp_path / "metrics", synthetic)
    assert table["train steps"].tolist() == [cfg.steps * len(LEVELS), 0, 150]
    text = (tmp_path / "metrics" / "methods.md").read_text()
    assert "Baseline budget (train.baseline_budget: paper; lora): the paper's (Table S1)" in text
    # the table states its own setting; the paper's column only where the paper has numbers for the dataset
    assert "Setting: dataset `synthetic` at 32 px, base model the shipped tiny base, 150 training steps" in text
    assert "paper FishNet" not in text and "FishNet only, so it has no column here" in text
    bioscan = TableSetting("bioscan1m", 512, "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", 250_000)
    assert "paper FishNet FID / LPIPS / BioCLIP" not in compare(["lora"], LEVELS, methods, tmp_path / "b", bioscan)
    text = (tmp_path / "b" / "methods.md").read_text()
    assert "paper FishNet" not in text and "`bioscan1m` at 512 px, base model sd15" in text
    fishnet = TableSetting("fishnet", 512, "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", 250_000)
    table = compare(["lora"], LEVELS, methods, tmp_path / "f", fishnet)
    assert table["paper FishNet FID / LPIPS / BioCLIP"].tolist() == ["43.91 / 0.7574 / 7.61"]
    assert "The paper column: FishNet, SD1.5 at 512 px" in (tmp_path / "f" / "methods.md").read_text()
    (methods / "lora" / METHOD_FILE).unlink()
    with pytest.raises(UserError, match=r"lora/method.json: missing; run `dvc repro method@lora`"):
        compare(["lora"], LEVELS, methods, tmp_path / "metrics", synthetic)


# ---------------------------------------------------------------------------------------------- model.pretrained


def _load(preset: str, pretrained) -> str:
    with pytest.raises(UserError) as info:
        load_base(section("model", {"preset": preset, "pretrained": str(pretrained)}))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"model.pretrained={str(pretrained)!r}: "), message
    return message


def test_a_folder_that_does_not_exist(tmp_path):
    message = _load("tiny", tmp_path / "nope")
    assert f"folder {tmp_path / 'nope'} does not exist; set model.pretrained to the tiny base folder" in message
    message = _load("sd15", tmp_path / "sd15")  # an absolute path is a folder, never a hub id
    assert "does not exist; set model.pretrained to a local diffusers folder with unet/ vae/" in message


@pytest.mark.parametrize("component", ["vae", "unet", "text_encoder", "tokenizer", "scheduler"])
def test_a_folder_without_a_component(tmp_path, component):
    folder = tmp_path / "tiny-base"
    shutil.copytree(TINY, folder)
    shutil.rmtree(folder / component)
    message = _load("tiny", folder)
    assert f"folder {folder} has no {component}/ (a base model folder holds unet/ vae/ text_encoder/ " in message
    assert "set model.pretrained to the tiny base folder (assets/tiny-base" in message


def test_a_hub_id_while_offline_that_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = _load("sd15", "someone/not-a-cached-model")
    assert "as a hub id it is not in the HF cache" in message and "while HF_HUB_OFFLINE=1" in message
    assert "`hf download someone/not-a-cached-model`" in message and "set model.pretrained to a local" in message


def test_preset_sd15_on_the_tiny_folder_and_tiny_on_an_sd_folder(tmp_path):
    message = _load("sd15", TINY)
    assert "holds the tiny base (its vae/ is a SpaceToDepthVAE config), but model.preset is sd15" in message
    assert "set model.preset: tiny" in message
    sd = make_small_sd15(tmp_path / "mini-sd")
    message = _load("tiny", sd)
    assert "holds a AutoencoderKL VAE" not in message and "its vae/ is an AutoencoderKL config" in message
    assert "but model.preset is tiny; set model.preset: sd15, or model.pretrained: assets/tiny-base" in message
    assert load_base(section("model", {"preset": "sd15", "pretrained": str(sd)})).resolution == 16


def test_an_sd_folder_with_configs_but_no_weights_names_the_missing_file():
    message = _load("sd15", REPO / "assets" / "sd15")  # the architecture configs only: no tokenizer/
    assert "has no tokenizer/" in message
