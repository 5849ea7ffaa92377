"""The code's structure rules, checked on the source: no import cycle, no sys.path edits, small rooms,
and no file that points outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "taxadiffusion"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Our own modules imported at module level (function-level imports do not make cycles at import time)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("taxadiffusion")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if not mod.startswith("taxadiffusion"):
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}  # `from . import files` imports a module
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {d for d in _top_level_imports(p) if d in modules and d != m} for m, p in modules.items()}


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep] if dep in stack else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_sys_path_edits_and_library_files_stay_small():
    edits = [str(p.relative_to(REPO)) for folder in ("stages", "benchmarks", "tests", "taxadiffusion")
             for p in (REPO / folder).rglob("*.py") if p.name != "test_structure.py" and "sys.path" in p.read_text()]
    assert not edits, f"sys.path edits (the package is installed): {edits}"
    big = {str(p.relative_to(REPO)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"library files over {MAX_LINES} lines: {big}"


def test_no_file_points_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"\.\./shared|shared/docs|stack-notes|ecosystem\.md|(?<![\w/])method\.md §")
    hits = []
    for name in tracked:
        path = REPO / name
        if path.suffix not in (".py", ".md", ".yaml", ".txt", ".toml") or name == "tests/test_structure.py" \
                or not path.is_file():
            continue
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and "docs/method.md" not in line and "(method.md" not in line:
                hits.append(f"{name}:{i}: {line.strip()[:80]}")
    assert not hits, "references to files a clone does not have:\n" + "\n".join(hits)


def test_train_stages_read_every_train_key_but_the_baseline_budget():
    """train@<level> lists its `train` keys one by one (so `-S train.baseline_budget=paper` re-trains only the
    comparison baselines): a new TrainConfig field must be added to dvc.yaml too."""
    import dataclasses

    import yaml

    from taxadiffusion.config import TrainConfig

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = {p.split(".", 1)[1] for p in stages["train"]["do"]["params"] if str(p).startswith("train.")}
    assert listed == {f.name for f in dataclasses.fields(TrainConfig)} - {"baseline_budget"}
    assert "train" in stages["method_train"]["do"]["params"]
