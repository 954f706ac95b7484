"""The command's modules: one a command group, the parser in main, no cycle among them."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import edged.cli
from edged.cli import main as cli

PACKAGE = Path(edged.cli.__file__).parent


def cli_imports(path: Path) -> set[str]:
    """The ``edged.cli`` modules a source file imports (at the top or inside a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "edged.cli":
                found.update(f"edged.cli.{alias.name}" for alias in node.names)
            elif node.module.startswith("edged.cli."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edged.cli."))
    return found


def graph() -> dict[str, set[str]]:
    return {f"edged.cli.{p.stem}": cli_imports(p) for p in PACKAGE.glob("*.py")}


def test_only_the_entry_point_imports_main() -> None:
    importers = [name for name, imports in graph().items() if "edged.cli.main" in imports]
    assert importers == []


def test_no_import_cycle_among_the_command_modules() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail, name]))
        if name in done:
            return
        for target in edges.get(name, ()):
            visit(target, [*trail, name])
        done.add(name)

    for name in edges:
        visit(name, [])


def commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.append(sub)
                found.extend(commands(sub))
    return found


def test_every_command_runs_from_its_group_module() -> None:
    funcs = [p.get_default("func") for p in commands(cli.parser())]
    modules = {f.__module__ for f in funcs if f is not None}
    assert "edged.cli.main" not in modules
    assert modules <= {n for n in graph() if n not in ("edged.cli.main", "edged.cli.__init__")}
    assert len(modules) >= 8  # run, events, people, doors, status, outbox, terminals, simulate
