"""Reading ``params.yaml`` as DVC reads it (YAML 1.2 booleans); a missing or malformed file is a one-line error."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from taxadiffusion.core.errors import UserError


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (only true/false), as DVC (ruamel) reads params.yaml.

    YAML 1.1 also reads yes/no/on/off as booleans, and `dvc exp run -S ...` rewrites params.yaml without
    quotes: measured, `-S methods=[...]` turned `mixed_precision: "no"` into `no`, which PyYAML read as false.
    """


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_params_dict(path: str | Path = "params.yaml") -> dict:
    """``params.yaml`` as a plain mapping (YAML 1.2 booleans); a missing or malformed file is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found (run from the repository root)")
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data
