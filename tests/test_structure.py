"""The code's structure rules, checked on the source (docs/architecture.md "Rules"): imports flow one way (no
cycle between modules, function-level imports included, and none between the phase folders), few modules at the
top of the package, short functions with short signatures, small files, no sys.path edits, and no file that points
outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "taxadiffusion"
MAX_LINES = 400  # lines per library file
MAX_FUNCTION_LINES = 60  # lines per function (def line to last line, docstring included)
MAX_PARAMETERS = 7  # parameters per function (self / cls not counted)
MAX_TOP_LEVEL_MODULES = 12  # modules directly in taxadiffusion/
# A function may break the two rules above when the line right above its `def` (or its first decorator) says why:
OPT_OUT = re.compile(r"^\s*# structure: \S.{9,}")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Our own modules an import statement anywhere in ``path`` names (module or function level; ``from . import
    files`` imports a module). The parent packages Python runs on the way are not edges of their own."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("taxadiffusion")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if mod.startswith("taxadiffusion"):
                out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, stack + [dep])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def _room(module: str) -> str:
    """The phase folder a module lives in (``taxadiffusion.training.train`` -> ``training``); a module directly in
    the package is a room of its own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_package_has_no_import_cycle_function_level_imports_included():
    graph = import_graph()
    assert len(graph) > 30
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_phase_folders_import_one_way():
    rooms: dict[str, set[str]] = {}
    for module, deps in import_graph().items():
        if module.startswith("taxadiffusion.__init__") or module == "taxadiffusion":
            continue
        rooms.setdefault(_room(module), set()).update(_room(d) for d in deps if d != "taxadiffusion")
    graph = {room: deps - {room} for room, deps in rooms.items()}
    cycle = _find_cycle(graph)
    assert cycle is None, "the phase folders import each other in a circle: " + " -> ".join(cycle)
    # the model code is imported by the stages' work, never the reverse
    assert not graph["models"] & {"data", "training", "sampling", "metrics", "figures", "report", "comparison",
                                  "analysis", "tools"}, graph["models"]
    assert graph["core"] == set(), graph["core"]


def test_few_modules_at_the_top_of_the_package():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def _opted_out(lines: list[str], node: ast.AST) -> bool:
    first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    return first >= 2 and bool(OPT_OUT.match(lines[first - 2]))


def test_functions_are_short_with_short_signatures():
    """docs/architecture.md "Rules": at most MAX_FUNCTION_LINES lines and MAX_PARAMETERS parameters per function,
    unless the line above the def says why (``# structure: ...``)."""
    long, wide = [], []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or _opted_out(lines, node):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno} {node.name}"
            if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                long.append(f"{where} ({n} lines)")
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                      *([a.kwarg] if a.kwarg else [])]
            if params and params[0].arg in ("self", "cls"):
                params = params[1:]
            if len(params) > MAX_PARAMETERS:
                wide.append(f"{where} ({len(params)} parameters)")
    assert not long, (f"functions over {MAX_FUNCTION_LINES} lines (split them, or say why above the def):\n"
                      + "\n".join(long))
    assert not wide, (f"functions with over {MAX_PARAMETERS} parameters (group what travels together, or say why):\n"
                      + "\n".join(wide))


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
