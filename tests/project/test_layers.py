"""The rooms of edged/ and how they may import each other (docs/development.md).

The import graph is read with ``ast``: every ``import`` and ``from ... import`` anywhere in a
module (at module level, inside functions, under ``if TYPE_CHECKING``), relative ones resolved,
``from package import name`` counted as an import of the module ``package.name`` when there is
one. It must have no cycle, and every edge must follow the rule below.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

EDGED = Path(__file__).resolve().parents[2] / "edged"

ROOT = "root"  # modules directly in edged/: model, errors, logs, config, hooks, ...
# The rooms, lowest first. A module may import its own room, the rooms below it and the root;
# the root imports only the root. The order is the README's arrow read from the bottom: the
# store and the pure decisions first, the features that use them, then what assembles and
# drives the daemon (ops), the simulator, and the command line on top.
ROOMS = (
    "store",
    "decide",
    "access",
    "receive",
    "doors",
    "terminals",
    "upstream",
    "admin",
    "mqtt",
    "web",
    "ops",
    "sim",
    "cli",
)
# Modules whose room is not their folder: ``python -m edged`` is the command line.
ROOM_OF = {"edged.__main__": "cli"}
# Packages that are part of the root: the configuration, which every room reads.
ROOT_PACKAGES = ("config",)
# Exceptions to the rule: none.
EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()
# Edges being removed on other branches, ignored until they are merged: the lead empties this
# once they are (a listed edge that no longer exists fails test_no_stale_entries).
PENDING_REMOVAL: frozenset[tuple[str, str]] = frozenset()


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The package's modules that module ``name`` imports, anywhere in its text."""
    known = set(known)
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                module = f"{base}.{alias.name}"
                out.add(module if module in known else base)
    return {m for m in out if m in known and m != name}


def graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    found = modules(package)
    return {name: imports(name, path, found) for name, path in found.items()}


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every set of modules that import each other, directly or around (Tarjan's SCCs)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def room(module: str) -> str:
    """The room of a module: its folder under edged/, or the root."""
    if module in ROOM_OF:
        return ROOM_OF[module]
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    if len(parts) > 2 and parts[1] not in ROOT_PACKAGES:
        raise AssertionError(f"{module}: in no room; add its folder to ROOMS")
    return ROOT


def allowed(importer: str, imported: str) -> bool:
    """Whether the layer rule lets ``importer`` import ``imported``."""
    low, high = room(imported), room(importer)
    if low in (ROOT, high):
        return True
    return high != ROOT and ROOMS.index(low) < ROOMS.index(high)


def against_the_rule(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """The edges the layer rule forbids, as ``importer (room) -> imported (room)``."""
    return [
        f"{a} ({room(a)}) -> {b} ({room(b)})"
        for a in sorted(edges)
        for b in sorted(edges[a])
        if (a, b) not in EXCEPTIONS and not allowed(a, b)
    ]


def without(edges: Mapping[str, Iterable[str]], ignored: Iterable[tuple[str, str]]) -> dict:
    """The graph less the ignored edges."""
    skip = set(ignored)
    return {a: {b for b in bs if (a, b) not in skip} for a, bs in edges.items()}


# ----- edged itself ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edged_graph() -> dict[str, set[str]]:
    return without(graph(EDGED), PENDING_REMOVAL)


def test_edged_has_no_import_cycle(edged_graph: dict[str, set[str]]) -> None:
    assert cycles(edged_graph) == []


def test_edged_imports_follow_the_rooms(edged_graph: dict[str, set[str]]) -> None:
    assert against_the_rule(edged_graph) == []


def test_every_module_is_in_a_room() -> None:
    for module in modules(EDGED):
        assert room(module) in (ROOT, *ROOMS)


def test_no_stale_entries() -> None:
    """An edge listed as pending removal or as an exception still exists (else: delete it)."""
    edges = graph(EDGED)
    stale = [(a, b) for a, b in PENDING_REMOVAL | EXCEPTIONS if b not in edges.get(a, set())]
    assert stale == []


def test_the_graph_sees_the_kinds_of_import() -> None:
    """Module level, aliased module, from-package-import-module, and the daemon's top."""
    edges = graph(EDGED)
    assert "edged.ops.daemon" in edges["edged.ops.wiring"]  # from edged.ops import daemon as ...
    assert "edged.store.events" in edges["edged.ops.daemon"]  # from edged.store.events import
    assert "edged.cli.main" in edges["edged.__main__"]


# ----- the checks themselves, on a synthetic tree ---------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "edged"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent != package and not (path.parent / "__init__.py").exists():
            (path.parent / "__init__.py").write_text("")
        path.write_text(text)
    return package


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "admin/app.py": "from edged.admin import manage\n",
            "admin/manage.py": "def f():\n    from edged.admin.app import X\n",
            "admin/params.py": "",
        },
    )
    assert cycles(graph(package)) == [["edged.admin.app", "edged.admin.manage"]]


def test_a_cycle_through_relative_and_type_checking_imports_is_found(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "store/a.py": "from . import b\n",
            "store/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from .c import C\n",
            "store/c.py": "from ..store import a\n",
        },
    )
    assert cycles(graph(package)) == [["edged.store.a", "edged.store.b", "edged.store.c"]]


def test_an_upward_import_is_against_the_rule(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "store/readonly.py": "from edged.admin.app import event_json\n",
            "admin/app.py": "from edged.store import readonly\nfrom edged import model\n",
            "model.py": "",
        },
    )
    edges = graph(package)
    assert cycles(edges) == [["edged.admin.app", "edged.store.readonly"]]
    assert against_the_rule(edges) == ["edged.store.readonly (store) -> edged.admin.app (admin)"]


def test_the_root_imports_only_the_root(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "config.py": "import edged.decide.policy\nfrom edged import errors\n",
            "errors.py": "",
            "decide/policy.py": "from edged import errors\n",
        },
    )
    assert against_the_rule(graph(package)) == [
        "edged.config (root) -> edged.decide.policy (decide)"
    ]


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "model.py": "",
            "store/events.py": "from edged.model import Event\n",
            "receive/receiver.py": "from edged.store import events\nimport json\n",
            "ops/daemon.py": "from edged.receive import receiver\nfrom ..store import events\n",
        },
    )
    edges = graph(package)
    assert edges["edged.ops.daemon"] == {"edged.receive.receiver", "edged.store.events"}
    assert cycles(edges) == [] and against_the_rule(edges) == []
