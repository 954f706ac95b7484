"""What the store knows about terminals: where they were seen, pinned, trusted and synced.

The tables ``terminals_seen``, ``terminal_pins``, ``refused_requests``, ``terminal_trust`` and
``terminal_sync``. Reads take the caller's read connection (the Store's ``reader``, or a
command's own); writes take the writer thread's connection, inside its transaction
(``Store.run`` / ``Store.submit_nowait``), or a command's connection in autocommit mode.
"""

from __future__ import annotations

import sqlite3
from typing import Any

# Refused requests kept (the oldest go first): the intrusion alarm's evidence, bounded.
KEEP_REFUSED = 10_000

_PIN = (
    "INSERT INTO terminal_pins (serial, address, pinned_at, how) VALUES (?,?,?,?) "
    "ON CONFLICT (serial) DO UPDATE SET address = excluded.address, "
    "pinned_at = excluded.pinned_at, how = excluded.how"
)
_PIN_FIRST = (
    "INSERT OR IGNORE INTO terminal_pins (serial, address, pinned_at, how) VALUES (?,?,?,?)"
)
_REFUSE = (
    "INSERT INTO refused_requests (at, source, serial, terminal, path, bound, body) "
    "VALUES (?,?,?,?,?,?,?)"
)
_TRIM = "DELETE FROM refused_requests WHERE id <= (SELECT MAX(id) FROM refused_requests) - ?"
_UPSERT_SEEN = (
    "INSERT INTO terminals_seen (serial, address, last_seen, last_heartbeat, last_push) "
    "VALUES (?,?,?,?,?) ON CONFLICT (serial) DO UPDATE SET address = excluded.address, "
    "last_seen = excluded.last_seen, "
    "last_heartbeat = COALESCE(excluded.last_heartbeat, last_heartbeat), "
    "last_push = COALESCE(excluded.last_push, last_push)"
)
_TRUST = (
    "INSERT INTO terminal_trust (serial, name, fingerprint, subject, trusted_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial) DO UPDATE SET name = excluded.name, "
    "fingerprint = excluded.fingerprint, subject = excluded.subject, "
    "trusted_at = excluded.trusted_at"
)
_SYNCED = (
    "INSERT INTO terminal_sync (serial, synced_until, registered_at) VALUES (?,?,?) "
    "ON CONFLICT (serial) DO UPDATE SET synced_until = excluded.synced_until, "
    "registered_at = COALESCE(excluded.registered_at, registered_at)"
)

# A terminals_seen row: (serial, address, last_seen, last_heartbeat, last_push).
SeenRow = tuple[str, str | None, float, float | None, float | None]


# ----- seen -----------------------------------------------------------------------------------


def seen_all(conn: sqlite3.Connection) -> list[SeenRow]:
    """Every terminal seen, as (serial, address, last_seen, last_heartbeat, last_push)."""
    rows = conn.execute(
        "SELECT serial, address, last_seen, last_heartbeat, last_push FROM terminals_seen"
    ).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def mark_seen(conn: sqlite3.Connection, row: SeenRow) -> None:
    """Record a terminal seen (a heartbeat or a push keeps the other's time)."""
    conn.execute(_UPSERT_SEEN, row)


def last_seen_address(conn: sqlite3.Connection, serial: str) -> str | None:
    """The address a terminal was last seen from (edged/receive/receiver.py keeps it)."""
    row = conn.execute("SELECT address FROM terminals_seen WHERE serial = ?", (serial,)).fetchone()
    return str(row[0]) if row and row[0] else None


# ----- address pins ---------------------------------------------------------------------------


def pinned_address(conn: sqlite3.Connection, serial: str) -> str | None:
    """The address a terminal is pinned to, if any."""
    row = conn.execute("SELECT address FROM terminal_pins WHERE serial = ?", (serial,)).fetchone()
    return str(row[0]) if row else None


def pinned_serials(conn: sqlite3.Connection, address: str) -> list[str]:
    """The serials pinned to one address."""
    rows = conn.execute("SELECT serial FROM terminal_pins WHERE address = ?", (address,))
    return [str(r[0]) for r in rows]


def pin(conn: sqlite3.Connection, serial: str, address: str, how: str, now: float) -> None:
    """Pin (or re-pin) a terminal to one address."""
    conn.execute(_PIN, (serial, address, now, how))


def pin_first(conn: sqlite3.Connection, serial: str, address: str, how: str, now: float) -> None:
    """Pin a terminal to one address unless it is pinned already (the first contact wins)."""
    conn.execute(_PIN_FIRST, (serial, address, now, how))


def pin_info(conn: sqlite3.Connection, serial: str) -> tuple[str, float, str] | None:
    """A pin's (address, pinned_at, how), for ``edged terminals show``."""
    row = conn.execute(
        "SELECT address, pinned_at, how FROM terminal_pins WHERE serial = ?", (serial,)
    ).fetchone()
    return (str(row[0]), float(row[1]), str(row[2])) if row else None


# ----- refused requests -----------------------------------------------------------------------


def record_refused(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Keep a refused request (at, source, serial, terminal, path, bound, body), the newest
    ``KEEP_REFUSED`` only."""
    conn.execute(_REFUSE, row)
    conn.execute(_TRIM, (KEEP_REFUSED,))


def refused_summary(conn: sqlite3.Connection, since: float) -> dict[str, Any]:
    """Refused requests since ``since``: how many, and the latest."""
    count = conn.execute("SELECT COUNT(*) FROM refused_requests WHERE at >= ?", (since,))
    latest = conn.execute(
        "SELECT at, source, serial, terminal, path FROM refused_requests WHERE at >= ? "
        "ORDER BY id DESC LIMIT 1",
        (since,),
    ).fetchone()
    return {"count": int(count.fetchone()[0]), "latest": dict(latest) if latest else None}


def refused_by_terminal(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """Refused requests since ``since`` by the serial they claimed."""
    rows = conn.execute(
        "SELECT serial, COUNT(*) FROM refused_requests WHERE at >= ? GROUP BY serial", (since,)
    )
    return {str(r[0]): int(r[1]) for r in rows}


# ----- certificate trust ----------------------------------------------------------------------


def trusted_fingerprint(conn: sqlite3.Connection, serial: str) -> str | None:
    """The fingerprint an operator trusted for a terminal's serial, if any."""
    row = conn.execute(
        "SELECT fingerprint FROM terminal_trust WHERE serial = ?", (serial,)
    ).fetchone()
    return str(row[0]) if row else None


def trust(
    conn: sqlite3.Connection, serial: str, name: str, fingerprint: str, subject: str, at: float
) -> None:
    """Remember an operator's trust in a certificate (replacing any earlier one)."""
    conn.execute(_TRUST, (serial, name, fingerprint, subject, at))


# ----- reconciliation -------------------------------------------------------------------------


def synced_until(conn: sqlite3.Connection, serial: str) -> float | None:
    """Up to when a terminal's records were reconciled (None: never)."""
    row = conn.execute(
        "SELECT synced_until FROM terminal_sync WHERE serial = ?", (serial,)
    ).fetchone()
    return None if row is None else float(row[0])


def mark_synced(conn: sqlite3.Connection, serial: str, now: float, registered: bool) -> None:
    """A terminal reconciled up to ``now``; ``registered``: edged registered with it now."""
    conn.execute(_SYNCED, (serial, now, now if registered else None))
