"""The people document is parsed and validated without a database."""

from __future__ import annotations

import ast
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edged.access import peopledoc
from edged.errors import ImportFileError

UTC = ZoneInfo("UTC")


def test_the_parser_imports_no_database() -> None:
    tree = ast.parse(Path(peopledoc.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if "sqlite" in m or m.startswith("edged.store")}


def test_a_document_parses_to_rows(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("id,name,ic_number,groups\ne-1,Ada,1001,staff|night\n", encoding="utf-8")
    doc = peopledoc.load_file(path, UTC)
    assert doc.people is not None
    [person] = doc.people
    assert (person.id, person.name, person.groups) == ("e-1", "Ada", ["night", "staff"])
    assert sorted(person.credentials) == [("ic", "1001"), ("user_id", "e-1")]


def test_every_problem_at_once() -> None:
    with pytest.raises(ImportFileError) as caught:
        peopledoc.parse_document([{"id": "e-1"}, {"id": "e-1", "name": "B"}, {}], UTC)
    assert len(caught.value.problems) >= 3
