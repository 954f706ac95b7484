"""The README's table of rooms names every module of edged/, and nothing that is gone."""

from __future__ import annotations

import re

from tests.project.helpers import ROOT

ROW = re.compile(r"^\| (`(\w+)/`|root) \| ([^|]+) \|", re.M)


def table() -> set[str]:
    found: set[str] = set()
    for match in ROW.finditer((ROOT / "README.md").read_text(encoding="utf-8")):
        room = match.group(2)
        for name in re.findall(r"`([\w/]+)`", match.group(3)):
            found.add(f"{room}/{name}" if room else name.rstrip("/"))
    return found


def modules() -> set[str]:
    package = ROOT / "edged"
    found = {p.stem for p in package.glob("*.py") if not p.stem.startswith("__")}
    for folder in package.iterdir():
        if (folder / "__init__.py").exists():
            if folder.name == "config":  # a root package: named as a whole
                found.add("config")
                continue
            found |= {
                f"{folder.name}/{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"
            }
    return found


def test_the_table_is_read() -> None:
    assert {"receive/receiver", "store/events", "config", "aio"} <= table()


def test_the_readme_names_every_module_and_no_other() -> None:
    assert table() == modules()
