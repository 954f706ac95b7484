"""The MQTT publishing cursor (table ``mqtt_cursor``) and the command nonces (``mqtt_nonces``).

edged/mqtt/ publishes; this module is what it reads and writes. The cursor follows the upstream
outbox's pattern (edged/store/outbox.py): the highest event id the broker acknowledged, moved in
the writer thread (``Store.submit_nowait``/``Store.run``), never backwards; the records after it
are read on the publisher's own connection.
"""

from __future__ import annotations

import sqlite3
from typing import Any

# A nonce is kept this long (seconds) after it was accepted: longer than the timestamp window,
# so a replayed command is refused for its nonce while its timestamp would still pass.
NONCE_KEEP = 300.0


def cursor(conn: sqlite3.Connection) -> int:
    """The highest event id the broker acknowledged (0 before the first)."""
    row = conn.execute("SELECT published_up_to FROM mqtt_cursor WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def advance(conn: sqlite3.Connection, last_id: int, count: int, now: float) -> None:
    """Move the cursor after acknowledged records (never backwards)."""
    conn.execute(
        "UPDATE mqtt_cursor SET published_up_to = MAX(published_up_to, ?), published_at = ?, "
        "records = records + ? WHERE id = 1",
        (last_id, now, count),
    )


def after(conn: sqlite3.Connection, columns: str, last_id: int, limit: int) -> list[sqlite3.Row]:
    """The records after ``last_id``, oldest first, at most ``limit``."""
    return conn.execute(
        f"SELECT {columns} FROM events WHERE id > ? ORDER BY id LIMIT ?", (last_id, limit)
    ).fetchall()


def status(conn: sqlite3.Connection) -> dict[str, Any]:
    """The cursor, when it last moved, and how many records wait behind it."""
    row = conn.execute(
        "SELECT published_up_to, published_at, records FROM mqtt_cursor WHERE id = 1"
    ).fetchone()
    up_to = int(row[0])
    depth = conn.execute("SELECT COUNT(*) FROM events WHERE id > ?", (up_to,)).fetchone()[0]
    return {
        "published_up_to": up_to,
        "last_published_at": row[1],
        "records": int(row[2]),
        "depth": int(depth),
    }


def remember_nonce(conn: sqlite3.Connection, nonce: str, now: float) -> bool:
    """Keep a command's nonce; False when it was accepted before (a replay)."""
    conn.execute("DELETE FROM mqtt_nonces WHERE at < ?", (now - NONCE_KEEP,))
    done = conn.execute("INSERT OR IGNORE INTO mqtt_nonces (nonce, at) VALUES (?, ?)", (nonce, now))
    return done.rowcount == 1
