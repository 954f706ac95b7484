"""docs/operations.md lists every logger edged creates, by its module's name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.project.helpers import ROOT

PACKAGE = ROOT / "edged"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def created_loggers(path: Path) -> set[str]:
    """``getLogger(__name__)`` as the module's name, and ``getLogger("edged.…")`` literals."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name != "getLogger":
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Name) and arg.id == "__name__":
            found.add(module_name(path))
        elif isinstance(arg, ast.Constant) and str(arg.value).startswith("edged"):
            found.add(str(arg.value))
    return found


def documented_loggers() -> set[str]:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("### Logger names", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `(edged[\w.]*)` \|", section, re.MULTILINE))


def test_docs_list_every_logger_and_no_other() -> None:
    created = set().union(*(created_loggers(p) for p in PACKAGE.rglob("*.py")))
    documented = documented_loggers()
    assert created, "no logger found: the walk is broken"
    assert created - documented == set(), "loggers missing from docs/operations.md"
    assert documented - created == set(), "docs/operations.md lists loggers no module creates"
