"""Params for tests, built from the repository's own params.yaml (the one source of defaults)."""

from __future__ import annotations

import copy
from pathlib import Path

from taxadiffusion.config import Params, params_from_dict, read_params_dict, section_from_dict

REPO = Path(__file__).resolve().parents[1]
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
