"""``params.yaml`` -> typed sections: the file is the only source of defaults, and every missing, unknown or bad
key is a one-line error naming it, raised when the params are built (before any stage does work)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import yaml
from helpers.params import REPO, make_params, params_dict

from taxadiffusion.config import Params, SamplingConfig, load_params, params_from_dict
from taxadiffusion.core.errors import UserError

DEFAULTS = params_dict()
SECTIONS = [name for name, value in DEFAULTS.items() if isinstance(value, dict) and name != "levels"]
# Every key of params.yaml: the top-level ones (sections included) and every key of every section. The entries
# of `levels` are level names, not settings (a level may be left out), so they are not among them.
ALL_KEYS = [(key, None) for key in DEFAULTS] + [(sec, key) for sec in SECTIONS for key in DEFAULTS[sec]]


def _one_line_error(data: dict, *needles: str) -> str:
    with pytest.raises(UserError) as exc:
        params_from_dict(data)
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def test_the_repo_params_yaml_builds():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params) and params.level_names == list(DEFAULTS["levels"])
    assert SECTIONS == ["dataset", "synthesize", "prepare", "shard", "model", "train", "generate", "probe", "evaluate",
                        "figures", "preview", "compute"]


# ------------------------------------------------------------------------------------------------- (a) missing keys


@pytest.mark.parametrize("where, key", ALL_KEYS, ids=[k if s is None else f"{s}.{k}" for s, k in ALL_KEYS])
def test_a_missing_key_is_a_one_line_error_naming_it(where, key):
    data = params_dict()
    if key is None:
        del data[where]
        _one_line_error(data, "missing key", f"'{where}'")
    else:
        del data[where][key]
        _one_line_error(data, "missing key", f"'{where}.{key}'")


def test_a_stage_on_a_params_file_missing_a_key_fails_in_one_line(tmp_path):
    data = params_dict()
    del data["train"]["steps"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "prepare.py"), "--params", str(params),
                           "--out", str(tmp_path / "prepared")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "train.steps" in lines[0], proc.stderr
    assert not (tmp_path / "prepared").exists()  # nothing was started


# ------------------------------------------------------------------------------------------------- (b) unknown keys


@pytest.mark.parametrize("where, key", [
    (None, "guidance_scal"),  # a typo of a top-level key
    ("train", "stpes"),
    ("dataset", "resolutoin"),
    # removed keys: the experiment's seed is the top-level `seed`, paths come from the stage's CLI arguments
    ("train", "seed"), ("generate", "seed"), ("probe", "seed"),
    ("synthesize", "out"), ("generate", "out"), ("train", "scratch"), ("evaluate", "cache_dir"),
])
def test_an_unknown_key_is_a_one_line_error_naming_it(where, key):
    data = params_dict()
    if where is None:
        data[key] = 1
        _one_line_error(data, "unknown key", f"'{key}'", "top level")
    else:
        data[where][key] = "x"
        _one_line_error(data, "unknown key", f"'{key}'", f"'{where}'")


def test_a_section_that_is_not_a_mapping_is_a_one_line_error():
    _one_line_error(params_dict({"train": 3}), "'train'", "mapping")


# ------------------------------------------------------------------------------------------------- (c) bad values


BAD_VALUES = [
    ("train.steps", 0), ("train.steps", -1), ("probe.steps", 0),
    ("guidance_scale", float("nan")), ("guidance_scale", "abc"),
    ("num_inference_steps", 2.7), ("num_inference_steps", "ten"),
    ("generate.images_per_species", 1.5),
    ("train.level_dropout", 0.5), ("train.level_dropout", -0.1), ("train.level_dropout", 2.0),
    ("prepare.seed", "x"),
    ("levels", ["class", "order", "family", "genus", "species"]),
    ("train.lr_first", "abc"),
    ("train.batch_size", 0), ("train.lora_rank", 0), ("probe.batch_size", 0), ("probe.width", 0),
    ("evaluate.batch_size", 0),
    ("dataset.resolution", 7),
    ("prepare.finest_required", "subspecies"), ("train.species_text", "binomial"),
    ("train.baseline_budget", "table_s1"),
]


@pytest.mark.parametrize("key, value", BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_a_bad_value_is_a_one_line_error_naming_the_key(key, value):
    message = _one_line_error(params_dict({key: value}), key)
    assert "expected" in message, message  # says what would be accepted


def test_group_level_is_a_level_at_or_above_the_target_level():
    # evaluate.group_level names the per-group table's rows (Table S2: class): one of levels, never below the
    # generated taxa (generate.target_level), never a name another output of metrics/ uses
    assert make_params({"evaluate.group_level": "order"}).evaluate.group_level == "order"
    _one_line_error(params_dict({"evaluate.group_level": "kingdom"}), "evaluate.group_level=", "one of class, order")
    _one_line_error(params_dict({"evaluate.group_level": "species", "generate.target_level": "genus"}),
                    "evaluate.group_level=", "at or above generate.target_level: one of class, order, family, genus")
    _one_line_error(params_dict({"evaluate.group_level": "level"}), "evaluate.group_level=", "no other output")


def test_level_dropout_bound_follows_the_number_of_levels():
    # 1/5 is the most five levels allow (at most one level dropped per sample); with two levels, 1/2.
    _one_line_error(params_dict({"train.level_dropout": 0.21}), "train.level_dropout", "1/5")
    two = {"class": {"parent": "base"}, "species": {"parent": "class"}}
    assert make_params({"levels": two, "generate.target_level": "species", "figures.embedding_level": "class",
                        "prepare.finest_required": "species", "train.level_dropout": 0.5}).train.level_dropout == 0.5


def test_nan_read_from_yaml_is_a_one_line_error(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("\nguidance_scale: 2 ", "\nguidance_scale: .nan ", 1)
    assert "guidance_scale: .nan" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError, match=r"^params.yaml guidance_scale=nan: expected a finite number$"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("value", [0, 0.0, 1 / 5, 0.2])
def test_accepted_level_dropout(value):
    assert make_params({"train.level_dropout": value}).train.level_dropout == value


def test_number_strings_as_yaml_1_1_reads_them_are_numbers(tmp_path):
    params = make_params({"train.lr": "1e-4", "train.lr_first": "2e-3"})
    assert params.train.lr == 1e-4 and isinstance(params.train.lr, float) and params.train.lr_first == 2e-3
    # PyYAML (YAML 1.1) reads `1e-4`, with no dot, as a string: params.yaml written that way still works
    text = (REPO / "params.yaml").read_text().replace("\n  lr: 1.0e-3 ", "\n  lr: 1e-4 ", 1)
    assert "\n  lr: 1e-4 " in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train.lr == 1e-4


def test_guidance_scale_zero_is_accepted():
    params = make_params({"guidance_scale": 0})
    assert params.guidance_scale == 0.0 and params.sampling.scale == 0.0


# ------------------------------------------------------------------------------------------------- (d) sampling


def test_sampling_carries_the_top_level_and_generate_settings():
    params = make_params({"num_inference_steps": 7, "guidance_scale": 3.5, "generate.sampler": "ddim",
                          "generate.guidance": "cfg", "generate.guidance_range": [0.1, 0.9],
                          "generate.dtype": "bf16"})
    s = params.sampling
    assert isinstance(s, SamplingConfig)
    assert (s.sampler, s.steps, s.scale, s.guidance, s.guidance_range, s.dtype) == (
        "ddim", 7, 3.5, "cfg", (0.1, 0.9), "bf16")
    assert isinstance(s.scale, float) and isinstance(s.guidance_range, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3  # overrides go through dataclasses.replace, which validates again


def test_replacing_sampling_settings_validates_them():
    s = make_params().sampling
    with pytest.raises(UserError, match=r"num_inference_steps=0: expected an integer >= 1") as exc:
        dataclasses.replace(s, steps=0)
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match=r"guidance_scale=nan: expected a finite number"):
        dataclasses.replace(s, scale=float("nan"))
    with pytest.raises(UserError, match=r"num_inference_steps=2.5"):
        dataclasses.replace(s, steps=2.5)
    grid = dataclasses.replace(s, steps=3, scale=1.5)
    assert (grid.steps, grid.scale, grid.sampler) == (3, 1.5, s.sampler) and s.steps == DEFAULTS["num_inference_steps"]
