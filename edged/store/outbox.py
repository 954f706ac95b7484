"""The forwarding cursor (table ``outbox``) and the records waiting behind it.

edged/upstream/outbox.py forwards; this module is what it reads and writes. The cursor moves
in the writer thread (``Store.run``); the batches are read on the forwarder's own connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def cursor(conn: sqlite3.Connection) -> int:
    """The highest event id the upstream acknowledged."""
    row = conn.execute("SELECT forwarded_up_to FROM outbox WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def advance(conn: sqlite3.Connection, last_id: int, count: int, now: float) -> None:
    """Move the cursor after an acknowledged batch (never backwards)."""
    conn.execute(
        "UPDATE outbox SET forwarded_up_to = MAX(forwarded_up_to, ?), forwarded_at = ?, "
        "batches = batches + 1, records = records + ? WHERE id = 1",
        (last_id, now, count),
    )


def waiting(conn: sqlite3.Connection, columns: str, limit: int) -> list[sqlite3.Row]:
    """The records after the cursor, oldest first, at most ``limit``."""
    return conn.execute(
        f"SELECT {columns} FROM events WHERE id > ? ORDER BY id LIMIT ?",
        (cursor(conn), limit),
    ).fetchall()


def status(conn: sqlite3.Connection, now: float) -> dict[str, Any]:
    """Depth and age of the records waiting for the upstream's acknowledgement."""
    row = conn.execute(
        "SELECT forwarded_up_to, forwarded_at, batches, records FROM outbox WHERE id = 1"
    ).fetchone()
    up_to = int(row[0])
    depth = int(conn.execute("SELECT COUNT(*) FROM events WHERE id > ?", (up_to,)).fetchone()[0])
    oldest = conn.execute(
        "SELECT id, received_at FROM events WHERE id > ? ORDER BY id LIMIT 1", (up_to,)
    ).fetchone()
    return {
        "enabled": True,
        "depth": depth,
        "oldest_id": int(oldest[0]) if oldest else None,
        "oldest_received_at": oldest[1] if oldest else None,
        "age_seconds": round(max(0.0, now - oldest[1]), 3) if oldest else 0.0,
        "forwarded_up_to": up_to,
        "last_forwarded_at": row[1],
        "batches": int(row[2]),
        "records": int(row[3]),
    }
