"""What the people sync remembers between runs (table ``people_sync``, one row).

edged/upstream/sync.py pulls the people document; this is its bookkeeping, read on the daemon's
read connection and written on the sync's own connection with the people it applied.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass
class SyncState:
    """What ``people_sync`` remembers between runs."""

    url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    synced_at: float | None = None
    checked_at: float | None = None
    people: int | None = None
    last_error: str | None = None


def load(conn: sqlite3.Connection) -> SyncState:
    """The stored sync state."""
    row = conn.execute(
        "SELECT url, etag, last_modified, synced_at, checked_at, people, last_error "
        "FROM people_sync WHERE id = 1"
    ).fetchone()
    return SyncState(*tuple(row)) if row else SyncState()


def save(conn: sqlite3.Connection, state: SyncState) -> None:
    """Store the sync state."""
    conn.execute(
        "UPDATE people_sync SET url = ?, etag = ?, last_modified = ?, synced_at = ?, "
        "checked_at = ?, people = ?, last_error = ? WHERE id = 1",
        (
            state.url,
            state.etag,
            state.last_modified,
            state.synced_at,
            state.checked_at,
            state.people,
            state.last_error,
        ),
    )


def save_committed(conn: sqlite3.Connection, state: SyncState) -> None:
    """Store the sync state in a transaction of its own (``conn`` in autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    save(conn, state)
    conn.execute("COMMIT")
