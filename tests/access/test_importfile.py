"""Import files to plain data, remembering the line each item starts on."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.access import importfile
from edged.errors import ImportFileError, NotFoundError


def test_item_lines_of_a_document_and_of_a_bare_list() -> None:
    text = '{\n "groups": [\n  {"id": "a"},\n  {"id": "b",\n   "name": "B"}, {"id": "c"}\n ],\n'
    text += ' "note": {"x": [1, 2]},\n "people": []\n}\n'
    assert importfile.item_lines(text) == {"groups": [3, 4, 5], "people": []}
    assert importfile.item_lines('[\n{"id": 1},\n\n{"id": 2}]') == {"people": [2, 4]}
    assert importfile.item_lines("42") == {}


def test_csv_rows_keep_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('\ufeffid,name,notes\na,Ann,"two\nlines"\n\nb,Bob,\n', encoding="utf-8")
    data, lines = importfile.read(path)
    assert [(r["id"], r["notes"]) for r in data["people"]] == [("a", "two\nlines"), ("b", "")]
    assert lines == {"people": [2, 5]}  # notes may span lines; a blank line is skipped


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (  # the field trial: a quote closed a line later swallowed the next person
            'id,name,groups\n51,"Carol,staff\n52",Dan\n53,Eve,staff\n',
            ["line 2: name: the quoted value runs over lines 2-3 (an unclosed quote?)"],
        ),
        (  # never closed: everything after it would be one name
            'id,name,groups\nc-1,Ann,staff\nc-2,"Carol,staff\nc-3,Dan,staff\n',
            ["line 3: a quoted value opened in this row is never closed (the file ends inside it)"],
        ),
        (
            'id,name\n1,"Carol"x\n2,Dan\n',
            ["line 2: bad quoting: ',' expected after '\"'"],
        ),
        (
            "id,name,type\na,A\nb,B,employee,x\n",
            [
                "line 2: fewer values (2) than header columns (3)",
                "line 3: more values (4) than header columns (3)",
            ],
        ),
        (
            "id,name,,name\na,A,,A\n",
            ["line 1: column 3 has no name", "line 1: column 'name' appears twice"],
        ),
        ("", ["line 1: empty file (expected a header row)"]),
    ],
)
def test_csv_is_parsed_strictly_with_line_numbers(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(ImportFileError) as exc:
        importfile.read(path)
    assert exc.value.problems == problems


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="cannot read: No such file"):
        importfile.read(tmp_path / "missing.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"id,name\na,Ren\xe9\n")
    with pytest.raises(ImportFileError, match="not UTF-8 text"):
        importfile.read(latin)
    bad = tmp_path / "bad.json"
    bad.write_text('{"people": [\n  {"id": 1,}\n]}')
    with pytest.raises(ImportFileError, match="line 2: not valid JSON"):
        importfile.read(bad)
