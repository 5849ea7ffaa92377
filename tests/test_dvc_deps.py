"""DVC's promise, checked on the source: every package module a stage script imports (transitively, function-level
imports included) is covered by that stage's `deps` in dvc.yaml, so a code change re-runs exactly the stages
that run that code.

A dep covers a module when it is the module's file or a folder above it. A few plumbing modules cannot change
what a stage writes and are allowed without a dep (PLUMBING, each with its reason).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PKG = "taxadiffusion"

PLUMBING = {
    "taxadiffusion/__init__.py": "the package docstring and nothing else",
    "taxadiffusion/cli.py": "argument parsing and one-line error printing; the stage's values come from params",
    "taxadiffusion/core/__init__.py": "a docstring",
    "taxadiffusion/core/errors.py": "the exception type of one-line errors",
    "taxadiffusion/core/files.py": "atomic writes and JSON reading: the bytes written are the caller's",
    "taxadiffusion/core/launch.py": "how many workers run a stage (params.yaml compute): never what they write",
    "taxadiffusion/core/progress.py": "a note of where a stage is, printed only when it is interrupted",
}


def module_file(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every `taxadiffusion` module an import statement anywhere in ``path`` names (module or function level,
    including ``from package import module``), plus the packages above each (Python runs their ``__init__``)."""
    rel = path.relative_to(REPO).with_suffix("").parts
    package = list(rel if path.name == "__init__.py" else rel[:-1])
    if path.name == "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    out = set()
    for mod in found:
        parts = mod.split(".")
        if parts[0] != PKG:
            continue
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_file(prefix) is not None:
                out.add(prefix)
    return out


def import_closure(script: Path) -> set[str]:
    """Package files (repo-relative) that running ``script`` can import."""
    todo, seen = [script], set()
    files: set[str] = set()
    while todo:
        path = todo.pop()
        for mod in imported_modules(path):
            if mod in seen:
                continue
            seen.add(mod)
            file = module_file(mod)
            files.add(file.relative_to(REPO).as_posix())
            todo.append(file)
    return files


def stages(dvc_yaml: dict) -> dict[str, dict]:
    """Stage name -> its definition (a foreach stage's `do` template stands for all its items)."""
    return {name: st.get("do", st) for name, st in dvc_yaml["stages"].items()}


def script_of(stage: dict) -> Path:
    match = re.search(r"python (stages/\S+\.py)", stage["cmd"])
    assert match, f"cmd does not run a stage script: {stage['cmd']}"
    return REPO / match.group(1)


def dep_paths(stage: dict) -> list[str]:
    return [(d if isinstance(d, str) else next(iter(d))).rstrip("/") for d in stage.get("deps", [])]


def uncovered(stage: dict) -> list[str]:
    deps = dep_paths(stage)
    needed = import_closure(script_of(stage))
    return sorted(f for f in needed - set(PLUMBING)
                  if not any(f == d or f.startswith(d + "/") for d in deps))


DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())


@pytest.mark.parametrize("name", sorted(stages(DVC)))
def test_every_imported_module_is_a_dep_of_the_stage(name):
    stage = stages(DVC)[name]
    missing = uncovered(stage)
    assert not missing, f"dvc.yaml stage {name!r} imports code its deps do not list: {missing}"
    assert str(script_of(stage).relative_to(REPO)) in dep_paths(stage), f"{name}: the stage script is not a dep"


def test_every_code_dep_exists_and_plumbing_is_real():
    for name, stage in stages(DVC).items():
        for dep in dep_paths(stage):
            if dep.startswith((PKG, "stages/")):
                assert (REPO / dep).exists(), f"dvc.yaml stage {name!r}: dep {dep} does not exist"
    for path in PLUMBING:
        assert (REPO / path).exists(), f"PLUMBING names {path}, which does not exist"


def test_the_closure_follows_function_level_and_module_imports(tmp_path):
    """The closure sees an import inside a function and `from package import module`."""
    script = REPO / "stages" / "method_train.py"
    closure = import_closure(script)
    # comparison/train.py imports the training loop inside a function
    assert "taxadiffusion/training/train.py" in closure
    # ...and the sampling half of the comparison is not pulled in by the training stage
    assert "taxadiffusion/comparison/sample.py" not in closure
