"""Import files to plain data, remembering the line each item starts on."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged import importfile
from edged.errors import ImportFileError


def test_item_lines_of_a_document_and_of_a_bare_list() -> None:
    text = '{\n "groups": [\n  {"id": "a"},\n  {"id": "b",\n   "name": "B"}, {"id": "c"}\n ],\n'
    text += ' "note": {"x": [1, 2]},\n "people": []\n}\n'
    assert importfile.item_lines(text) == {"groups": [3, 4, 5], "people": []}
    assert importfile.item_lines('[\n{"id": 1},\n\n{"id": 2}]') == {"people": [2, 4]}
    assert importfile.item_lines("42") == {}


def test_csv_rows_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('\ufeffid,name\na,"Ann\nSecond line"\nb,Bob\n', encoding="utf-8")
    data, lines = importfile.read(path)
    assert [r["id"] for r in data["people"]] == ["a", "b"]
    assert lines == {"people": [3, 4]}  # a row ends on the line csv reports


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="cannot read"):
        importfile.read(tmp_path / "missing.csv")
    bad = tmp_path / "bad.json"
    bad.write_text('{"people": [\n  {"id": 1,}\n]}')
    with pytest.raises(ImportFileError, match="line 2: not valid JSON"):
        importfile.read(bad)
    wide = tmp_path / "wide.csv"
    wide.write_text("id,name\na,A,extra\nb,B\nc,C,more\n")
    with pytest.raises(ImportFileError) as exc:
        importfile.read(wide)
    assert exc.value.problems == [
        "line 2: more values than header columns",
        "line 4: more values than header columns",
    ]
