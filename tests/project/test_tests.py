"""The test suite's own shape: shared helpers live in helper modules, never in a test module."""

from __future__ import annotations

import ast

from tests.project.helpers import ROOT

TESTS = ROOT / "tests"


def imported_modules(source: str) -> set[str]:
    """The ``tests.…`` modules a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("tests.")}


def test_no_test_module_imports_another() -> None:
    offenders = {
        (str(path.relative_to(ROOT)), name)
        for path in TESTS.rglob("test_*.py")
        for name in imported_modules(path.read_text(encoding="utf-8"))
        if name.rpartition(".")[2].startswith("test_")
    }
    assert not offenders, f"import the shared helper from a helper module: {offenders}"
