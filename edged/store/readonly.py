"""The state database opened read-only, for the commands that read while the daemon runs or not.

``edged events``, ``edged why``, ``edged snapshot`` and the offline parts of ``edged status`` and
``edged outbox`` open the file with a ``file:…?mode=ro`` URI: they never create, migrate or
write it, so they are safe beside a running daemon and on a copy of the state folder.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import StoreError
from edged.store import migrations
from edged.store.eventjson import EVENT_COLUMNS, event_json, iso


def connect(path: Path) -> sqlite3.Connection:
    """A read-only connection to the state database at the schema this edged knows."""
    if not path.exists():
        raise StoreError(f"{path}: no database yet (edged has not run with this configuration)")
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.row_factory = sqlite3.Row
        version = migrations.schema_version(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the database: {exc}") from None
    if version < max(migrations.MIGRATIONS):
        conn.close()
        raise StoreError(
            f"{path}: the database is at schema {version}, this edged expects "
            f"{max(migrations.MIGRATIONS)}: start the daemon once to migrate it"
        )
    return conn


@dataclass(frozen=True)
class EventQuery:
    """Which stored events to read: filters as ``edged events`` takes them."""

    since: float | None = None
    terminal: str | None = None
    person: str | None = None
    decision: str | None = None
    until: float | None = None  # received before this moment (the audit export's end)
    door: str | None = None

    def where(self, after: int = 0) -> tuple[str, list[Any]]:
        """The SQL condition and its arguments, for events with an id above ``after``."""
        clauses: list[str] = ["id > ?"]
        args: list[Any] = [after]
        for column, value in (
            ("received_at >=", self.since),
            ("terminal =", self.terminal),
            ("person_id =", self.person),
            ("decision =", self.decision),
            ("received_at <", self.until),
            ("door =", self.door),
        ):
            if value is not None:
                clauses.append(f"{column} ?")
                args.append(value)
        return " AND ".join(clauses), args


def events(
    conn: sqlite3.Connection,
    query: EventQuery,
    limit: int,
    newest_first: bool = False,
    after: int = 0,
) -> Iterator[dict[str, Any]]:
    """At most ``limit`` matching events after id ``after``, as the admin API shows them."""
    where, args = query.where(after)
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE {where} ORDER BY id {order} LIMIT ?"
    for row in conn.execute(sql, [*args, limit]):
        yield event_json(row)


def recent(conn: sqlite3.Connection, query: EventQuery, count: int) -> list[dict[str, Any]]:
    """The ``count`` newest matching events, oldest first."""
    return list(reversed(list(events(conn, query, count, newest_first=True))))


def last_id(conn: sqlite3.Connection) -> int:
    """The id of the newest stored event (0 when there is none)."""
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])


def last_decisions(conn: sqlite3.Connection, doors: list[str]) -> dict[str, dict[str, Any]]:
    """Each door's newest decided event: decision, reason, when."""
    out: dict[str, dict[str, Any]] = {}
    for door in doors:
        row = conn.execute(
            "SELECT id, received_at, decision, reason FROM events "
            "WHERE door = ? AND decision IS NOT NULL ORDER BY id DESC LIMIT 1",
            (door,),
        ).fetchone()
        if row is not None:
            out[door] = {"event": row[0], "at": row[1], "decision": row[2], "reason": row[3]}
    return out


def terminals_seen(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """What the daemon last stored about each terminal it heard from, by serial (ISO times)."""
    rows = conn.execute("SELECT serial, address, last_push, last_heartbeat FROM terminals_seen")
    return {
        r[0]: {"address": r[1], "last_push": iso(r[2]), "last_heartbeat": iso(r[3])} for r in rows
    }


def site_modes(conn: sqlite3.Connection) -> dict[str, bool]:
    """Whether a site-wide lockdown or free access is switched on."""
    row = conn.execute("SELECT lockdown, free_access FROM modes WHERE scope = '*'").fetchone()
    return {"lockdown": bool(row and row[0]), "free_access": bool(row and row[1])}
