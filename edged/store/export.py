"""The audit export: stored events over a time range as CSV or JSON lines, streamed.

``edged events --format csv|jsonl`` and ``GET /api/v1/events.csv`` / ``.jsonl`` both read
through :func:`events`: a generator over a read-only connection that fetches one page of
``PAGE`` events at a time (``id > last`` in id order, each page its own short read), so an
export of millions of events holds one page in memory and never keeps a read snapshot open
across the whole file; the daemon's writer and WAL checkpoints go on meanwhile.

CSV cells that a spreadsheet would take for a formula (a text starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) are prefixed with a single quote ``'``: a person's name
pushed by a terminal is untrusted text (docs/cli.md, "Audit export").
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edged.store import readonly

PAGE = 500  # events fetched per read
FORMATS = ("csv", "jsonl")
# The CSV columns, in order: an event as the API shows it (edged/store/eventjson.py).
CSV_COLUMNS = (
    "id",
    "received_at",
    "occurred_at",
    "kind",
    "push_type",
    "terminal",
    "serial",
    "door",
    "person_id",
    "user_id",
    "user_name",
    "decision",
    "reason",
    "rule",
    "source",
    "door_outcome",
    "replayed",
    "replay_reason",
    "duplicates",
    "recognition",
    "recognize_status",
    "score",
    "entry_mode",
    "terminal_pass",
    "alarm_code",
    "alarm_status",
    "upstream_error",
    "uuid",
    "trace_id",
    "image",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def events(
    conn: sqlite3.Connection, query: readonly.EventQuery, page: int = PAGE
) -> Iterator[dict[str, Any]]:
    """Every matching event, oldest first, read ``page`` at a time."""
    after = 0
    while True:
        batch = list(readonly.events(conn, query, page, after=after))
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1]["id"]


def events_from_file(
    path: Path, query: readonly.EventQuery, page: int = PAGE
) -> Iterator[dict[str, Any]]:
    """:func:`events` over a read-only connection of its own, closed when the export ends."""
    conn = readonly.connect(path)
    try:
        yield from events(conn, query, page)
    finally:
        conn.close()


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: formula-like text gets a leading ``'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value


def csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The header, then one CSV line per event (RFC 4180 quoting, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([safe_cell(row.get(column)) for column in CSV_COLUMNS])
        if out.tell() > 16384:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    if out.tell():
        yield out.getvalue()


def jsonl_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """One JSON object per event and line (the admin API's shape)."""
    chunk: list[str] = []
    for row in rows:
        chunk.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        if len(chunk) >= 64:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


def lines(fmt: str, rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The export in ``fmt`` (``csv`` or ``jsonl``)."""
    if fmt == "csv":
        return csv_lines(rows)
    if fmt == "jsonl":
        return jsonl_lines(rows)
    raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
