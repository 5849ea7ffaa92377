"""The tests' own layout: shared code lives in the ``tests/helpers/`` package, test modules import it (never one
another, never ``conftest``), ``conftest.py`` holds fixtures and hooks only, and the ``slow`` marker is registered."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

TESTS = Path(__file__).resolve().parent
HELPERS = TESTS / "helpers"


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``, function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.lineno, node.module))
    return found


def test_top_level_files_are_test_modules_or_conftest():
    stray = sorted(p.name for p in TESTS.glob("*.py") if p.name != "conftest.py" and not p.name.startswith("test_"))
    assert not stray, f"helper modules belong in tests/helpers/ (import them as helpers.<module>): {stray}"
    assert (HELPERS / "__init__.py").is_file()


def test_no_test_module_or_helper_imports_a_test_module_or_conftest():
    local = {p.stem for p in TESTS.glob("*.py")}  # conftest and every test_* module
    bad = []
    for path in sorted(TESTS.rglob("*.py")):
        for line, module in _imported_modules(path):
            top = module.split(".")[0]
            if top in local or top.startswith("test_"):
                bad.append(f"{path.relative_to(TESTS)}:{line}: imports {module}")
    assert not bad, "move the shared code to tests/helpers/ and import it from there:\n" + "\n".join(bad)


def test_helpers_define_no_tests():
    for path in sorted(HELPERS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        tests = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
        assert not tests, f"{path.relative_to(TESTS)} defines tests {tests}: helpers are not collected"


def _is_fixture(node: ast.FunctionDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if ast.unparse(target) in ("pytest.fixture", "fixture"):
            return True
    return False


def test_conftest_holds_fixtures_and_hooks_only():
    tree = ast.parse((TESTS / "conftest.py").read_text())
    others = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
              and not (isinstance(n, ast.FunctionDef) and (_is_fixture(n) or n.name.startswith("pytest_")))]
    assert not others, f"conftest.py defines {others}: helpers go to tests/helpers/, conftest keeps fixtures"


def test_slow_marker_is_registered_and_strict():
    ini = configparser.ConfigParser()
    ini.read(TESTS.parent / "pytest.ini")
    markers = [line.strip() for line in ini["pytest"]["markers"].splitlines() if line.strip()]
    assert any(m.startswith("slow:") and len(m) > len("slow: ") for m in markers), markers
    addopts = ini["pytest"]["addopts"].split()
    assert "--strict-markers" in addopts and "no:cacheprovider" not in addopts, addopts
