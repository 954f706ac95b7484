"""The config package stands on the root modules only, and keeps its public face in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import edged.config
from edged import config
from edged.config import fields
from edged.terminals import tlspin

PACKAGE = Path(edged.config.__file__).parent
ROOT_MODULES = {"edged.model", "edged.errors", "edged.logs"}


def edged_imports(path: Path) -> set[str]:
    """Every ``edged`` module a source file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "edged" or n.startswith("edged."))
    return found


def test_config_imports_only_root_modules_and_itself() -> None:
    stray = {
        f"{path.name}: {name}"
        for path in PACKAGE.glob("*.py")
        for name in edged_imports(path)
        if name not in ROOT_MODULES and not name.startswith("edged.config")
    }
    assert not stray, f"config reaches outside the root modules: {sorted(stray)}"


def test_every_public_name_is_exported() -> None:
    assert set(config.__all__) <= set(dir(config))
    for name in ("Config", "TerminalConfig", "load", "parse", "to_toml", "admin_token"):
        assert name in config.__all__


def test_tlspin_uses_the_one_fingerprint_parser() -> None:
    assert tlspin.normalise is fields.normalise_fingerprint
    assert tlspin.check_fingerprint is fields.check_fingerprint
    assert tlspin.PREFIX == fields.FINGERPRINT_PREFIX == "sha256:"
