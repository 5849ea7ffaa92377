"""Params for tests, built from the repository's own params.yaml (the one source of defaults)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from taxadiffusion.config import Params, params_from_dict, read_params_dict, section_from_dict

REPO = Path(__file__).resolve().parents[2]
_DEFAULTS = read_params_dict(REPO / "params.yaml")


def params_dict(overrides: dict | None = None) -> dict:
    """The repo's params.yaml as a dict, with ``{"train.steps": 2, "seed": 1, "dataset": {...}}`` applied:
    a dotted key sets one value; a section given as a mapping is merged into that section."""
    data = copy.deepcopy(_DEFAULTS)
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if name:
            data[section][name] = value
        elif isinstance(value, dict) and isinstance(data.get(section), dict) and section != "levels":
            data[section].update(value)
        else:
            data[section] = value
    return data


def make_params(overrides: dict | None = None) -> Params:
    return params_from_dict(params_dict(overrides))


def section(name: str, overrides: dict | None = None):
    """One validated section, e.g. ``section("model", {"pretrained": "..."})`` -> ``ModelConfig``."""
    return section_from_dict(name, {**copy.deepcopy(_DEFAULTS[name]), **(overrides or {})})


def tiny_params(**overrides) -> dict:
    """params.yaml of the repo, shrunk for tests (few images, few steps), with absolute asset paths."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"].update(n_classes=3, images_per_species=[2, 8])
    params["model"]["pretrained"] = str(REPO / "assets" / "tiny-base")
    params["model"].update(cond_layers=1, cond_ff=64)
    params["train"].update(steps=2, batch_size=4)
    params["compute"].update(checkpoint_every=1, log_every=1)
    params["generate"].update(batch_size=8, images_per_species=1, images_per_species_capped=1)
    params["num_inference_steps"] = 3
    params["probe"].update(steps=20, batch_size=16)
    params["preview"].update(taxa=2, per_taxon=1, steps=2)  # still drawn at every level's last step
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            params[section][name] = value
        else:
            params[section] = value
    return params


def write_params(workdir: Path, params: dict) -> Path:
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
