"""The door log (table ``door_log``): what each door did, by whom, when.

Rows that belong to a record ride in the record's commit (edged/store/events.py); the others
are written by the writer thread (``Store.run``) through :func:`insert`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

INSERT = "INSERT INTO door_log (at, door, action, source, detail) VALUES (?,?,?,?,?)"


def insert(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Add one row (at, door, action, source, detail as JSON text)."""
    conn.execute(INSERT, row)


def prune(conn: sqlite3.Connection, older_than: float) -> int:
    """Delete the rows from before ``older_than``; how many went."""
    return conn.execute("DELETE FROM door_log WHERE at < ?", (older_than,)).rowcount


def page(conn: sqlite3.Connection, after: int, door: str | None, limit: int) -> list[sqlite3.Row]:
    """Rows with an id above ``after`` (of one door, or all), oldest first."""
    where = "id > ?"
    args: list[Any] = [after]
    if door is not None:
        where += " AND door = ?"
        args.append(door)
    return conn.execute(
        f"SELECT id, at, door, action, source, detail FROM door_log WHERE {where} "
        "ORDER BY id LIMIT ?",
        [*args, limit],
    ).fetchall()
