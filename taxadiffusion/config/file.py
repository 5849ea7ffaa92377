"""Reading ``params.yaml`` as DVC reads it (YAML 1.2 booleans, no duplicate keys); a missing or malformed file is a
one-line error."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from taxadiffusion.core.errors import UserError


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice: ``key`` (its dotted path) at 1-based ``lines`` (first, second)."""

    def __init__(self, key: str, lines: tuple[int, int]):
        super().__init__(f"{key} at lines {lines[0]} and {lines[1]}")
        self.key, self.lines = key, lines


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans (only true/false), as DVC (ruamel) reads params.yaml, and
    no duplicate keys.

    YAML 1.1 also reads yes/no/on/off as booleans, and `dvc exp run -S ...` rewrites params.yaml without
    quotes: measured, `-S methods=[...]` turned `mixed_precision: "no"` into `no`, which PyYAML read as false.

    A key given twice in one mapping (``train:`` twice, or ``steps:`` twice inside ``train``) is kept once by
    PyYAML, the last one silently winning, while DVC refuses the file: a direct or ``accelerate launch`` run
    would then train with a value DVC never sees. So every mapping is checked before anything is built.
    """

    def construct_document(self, node):
        self._check_keys(node, "", set())
        return super().construct_document(node)

    def _check_keys(self, node, where: str, seen: set[int]) -> None:
        if id(node) in seen:  # an alias repeats a node already checked (and could loop)
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_keys(item, f"{where}[{i}]", seen)
            return
        if not isinstance(node, yaml.MappingNode):
            return
        first: dict = {}
        for key_node, value_node in node.value:
            # `<<: *anchor` merges keys that the mapping may override (YAML merge keys): not a duplicate
            if key_node.tag != "tag:yaml.org,2002:merge" and isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node)
                path = f"{where}.{key}" if where else str(key)
                if key in first:
                    raise DuplicateKeyError(path, (first[key] + 1, key_node.start_mark.line + 1))
                first[key] = key_node.start_mark.line
                self._check_keys(value_node, path, seen)
            else:
                self._check_keys(value_node, where, seen)


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_params_dict(path: str | Path = "params.yaml") -> dict:
    """``params.yaml`` as a plain mapping (YAML 1.2 booleans); a missing or malformed file, or a key given twice,
    is a one-line error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found (run from the repository root)")
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    except DuplicateKeyError as exc:
        first, second = exc.lines
        raise UserError(f"{path}: key {exc.key} is given twice (lines {first} and {second}); YAML would silently "
                        "keep the last one (and DVC refuses the file): keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data
