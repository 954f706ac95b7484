"""Named reads of stored events: for the admin API, ``edged why``/``snapshot`` and decisions.

Each takes the caller's read connection (the Store's ``reader``, or a command's read-only one)
and returns rows or plain values. The columns a caller shows are its own (``columns``); the
conditions are these functions'.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

# Columns an event may be filtered on by equality (the admin API's query parameters).
FILTERABLE = frozenset({"terminal", "serial", "person_id", "decision", "kind", "reason"})


def events_after(
    conn: sqlite3.Connection,
    columns: str,
    after: int,
    limit: int,
    equal: Mapping[str, Any],
    since: float | None = None,
) -> list[sqlite3.Row]:
    """Events with an id above ``after``, oldest first, received at ``since`` or later (None:
    any time), whose ``equal`` columns match."""
    unknown = set(equal) - FILTERABLE
    if unknown:
        raise ValueError(f"not a filterable column: {sorted(unknown)}")
    where = [] if since is None else ["received_at >= ?"]
    where += [f"{column} = ?" for column in equal] + ["id > ?"]
    args = [] if since is None else [since]
    sql = f"SELECT {columns} FROM events WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
    return conn.execute(sql, [*args, *equal.values(), after, limit]).fetchall()


def event(conn: sqlite3.Connection, columns: str, event_id: int) -> sqlite3.Row | None:
    """One stored event's ``columns`` (None: no such event)."""
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {columns} FROM events WHERE id = ?", (event_id,)
    ).fetchone()
    return row


def snapshot_place(conn: sqlite3.Connection, event_id: int) -> sqlite3.Row | None:
    """Where an event's snapshot lies: (image_path, image_offset, image_bytes); None: no event."""
    return event(conn, "image_path, image_offset, image_bytes", event_id)


def decision(conn: sqlite3.Connection, event_id: int) -> dict[str, Any] | None:
    """What ``edged why`` tells of a stored event (None: no such event)."""
    row = event(
        conn,
        "id, kind, received_at, terminal, door, person_id, decision, reason, rule, "
        "replay_reason, source, explain",
        event_id,
    )
    return None if row is None else dict(zip(row.keys(), tuple(row), strict=True))


def door_outcome(conn: sqlite3.Connection, event_id: int) -> str | None:
    """What the door did with a stored decision (None: no part, or no such event)."""
    row = conn.execute("SELECT door_outcome FROM events WHERE id = ?", (event_id,)).fetchone()
    return row[0] if row else None


def last_pass(conn: sqlite3.Connection, person_id: str, door: str) -> float | None:
    """When this person last passed this door (a granted decision), if ever."""
    row = conn.execute(
        "SELECT received_at FROM events WHERE person_id = ? AND door = ? AND decision = 'pass' "
        "ORDER BY id DESC LIMIT 1",
        (person_id, door),
    ).fetchone()
    return None if row is None else float(row[0])
