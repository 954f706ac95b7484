"""The audit export over a real SQLite file: paged reads, time range, CSV and JSON lines."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from edged.receive.normalize import normalize
from edged.store import events as store
from edged.store import export, readonly
from tests.conftest import recognition

pytestmark = pytest.mark.anyio
START = 1_800_000_000.0
COUNT = 1234  # more than two pages of export.PAGE


def _record(i: int) -> store.Record:
    name = '=HYPERLINK("http://x")' if i == 7 else f"Person {i}"
    push = recognition(uuid=f"u{i}", user={"name": name, "user_id": f"p{i}", "type": 1})
    return store.Record(normalize(push), START + i, None, "lobby", {"code": 200}, person_id=f"p{i}")


async def _fill(path: Path) -> None:
    st = store.Store(path)
    try:
        assert await st.save_bulk(iter([_record(i) for i in range(COUNT)])) == COUNT
    finally:
        st.close()


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "edged.db"
    await _fill(path)
    return path


async def test_events_are_read_a_page_at_a_time(db: Path) -> None:
    conn = readonly.connect(db)
    selects: list[str] = []
    conn.set_trace_callback(lambda sql: selects.append(sql) if sql.startswith("SELECT") else None)
    try:
        rows = export.events(conn, readonly.EventQuery(), page=100)
        first = next(rows)
        assert first["id"] == 1 and len(selects) == 1  # one page read, not the whole table
        rest = list(rows)
    finally:
        conn.close()
    assert len(rest) + 1 == COUNT
    assert [r["id"] for r in rest] == list(range(2, COUNT + 1))
    assert len(selects) == COUNT // 100 + 1  # 13 pages: the last one short


async def test_since_and_until_bound_the_export(db: Path) -> None:
    query = readonly.EventQuery(since=START + 100, until=START + 700)
    rows = list(export.events_from_file(db, query))
    assert [r["id"] for r in rows] == list(range(101, 701))  # since inclusive, until exclusive


async def test_csv_has_a_header_every_row_and_guards_formulas(db: Path) -> None:
    text = "".join(export.lines("csv", export.events_from_file(db, readonly.EventQuery())))
    table = list(csv.reader(io.StringIO(text)))
    assert tuple(table[0]) == export.CSV_COLUMNS
    assert len(table) == COUNT + 1
    by_id = {row[0]: dict(zip(table[0], row, strict=True)) for row in table[1:]}
    assert by_id["8"]["user_name"] == '\'=HYPERLINK("http://x")'
    assert by_id["9"]["user_name"] == "Person 8"
    assert by_id["9"]["received_at"].startswith("2027-01-15T")
    assert by_id["9"]["replayed"] == "false"


def test_safe_cell_prefixes_every_formula_start() -> None:
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert export.safe_cell(f"{start}1+1") == f"'{start}1+1"
    assert export.safe_cell("Ann") == "Ann"
    assert export.safe_cell(-0.5) == -0.5  # a number is not a formula
    assert export.safe_cell(None) == ""


async def test_jsonl_is_one_event_per_line(db: Path) -> None:
    query = readonly.EventQuery(person="p7")
    text = "".join(export.lines("jsonl", export.events_from_file(db, query)))
    lines = text.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["user_name"] == '=HYPERLINK("http://x")'  # JSON is not guarded


async def test_export_reads_beside_a_writer(db: Path) -> None:
    """The export's connection is read-only and gives up no page to a writer's commit."""
    rows = export.events_from_file(db, readonly.EventQuery(), page=100)
    assert next(rows)["id"] == 1
    writer = sqlite3.connect(db)
    writer.execute("DELETE FROM events WHERE id > 1000")  # commits while the export is open
    writer.commit()
    writer.close()
    assert sum(1 for _ in rows) == 999  # later pages see the committed state


def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="format"):
        export.lines("xml", iter([]))
