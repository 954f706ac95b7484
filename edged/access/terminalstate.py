"""What the people sync wrote to each terminal, item by item, and each terminal's last sync.

``terminal_people`` holds one row per terminal and item (a ``user``, ``group`` or ``rule``): the
digest of the body last accepted (``sent``), the terminal's ``update_at`` for it where the firmware
reports one, its ``state`` (``in_step`` or ``error``) and the terminal's refusal (``error``). A
person's rows are what ``edged people show`` reports per terminal. ``terminal_people_sync`` is the
per-terminal summary ``edged terminals show`` and the admin API report.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed when the block ends, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@dataclass(frozen=True, slots=True)
class Item:
    """One item as last written to a terminal."""

    kind: str
    item_id: str
    person_id: str | None
    sent: str | None
    update_at: int | None
    state: str
    error: str | None = None


def items(conn: sqlite3.Connection, serial: str) -> dict[tuple[str, str], Item]:
    """Everything recorded for a terminal, by (kind, id)."""
    rows = conn.execute(
        "SELECT kind, item_id, person_id, sent, update_at, state, error FROM terminal_people "
        "WHERE serial = ?",
        (serial,),
    )
    return {(r[0], r[1]): Item(*r) for r in rows}


def record(
    conn: sqlite3.Connection,
    serial: str,
    written: Iterable[Item],
    removed: Iterable[tuple[str, str]],
    now: float,
    progress: str | None = None,
) -> None:
    """Keep what a batch wrote (or failed to write) and forget what it removed; one transaction.

    ``progress`` (``"40/200"``) is kept in the terminal's summary for ``terminals show``.
    """
    with _transaction(conn):
        if progress is not None:
            conn.execute(
                "INSERT OR IGNORE INTO terminal_people_sync (serial) VALUES (?)", (serial,)
            )
            conn.execute(
                "UPDATE terminal_people_sync SET progress = ? WHERE serial = ?", (progress, serial)
            )
        conn.executemany(
            "INSERT OR REPLACE INTO terminal_people (serial, kind, item_id, person_id, sent, "
            "update_at, state, error, at) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (serial, i.kind, i.item_id, i.person_id, i.sent, i.update_at, i.state, i.error, now)
                for i in written
            ],
        )
        conn.executemany(
            "DELETE FROM terminal_people WHERE serial = ? AND kind = ? AND item_id = ?",
            [(serial, kind, key) for kind, key in removed],
        )


def note_update_times(
    conn: sqlite3.Connection,
    serial: str,
    times: Iterable[tuple[str, str, int | None]],
    now: float,
) -> None:
    """Keep the terminal's ``update_at`` of each (kind, id, update_at) it holds where a row is
    recorded for it and the time differs; one transaction, nothing read into memory."""
    with _transaction(conn):
        conn.executemany(
            "UPDATE terminal_people SET update_at = ?, at = ? WHERE serial = ? AND kind = ? "
            "AND item_id = ? AND update_at IS NOT ?",
            ((at, now, serial, kind, key, at) for kind, key, at in times),
        )


def save_summary(conn: sqlite3.Connection, serial: str, summary: dict[str, Any]) -> None:
    """Keep a terminal's last sync (``synced_at``, counts, progress, ``limits`` list)."""
    conn.execute(
        "INSERT OR REPLACE INTO terminal_people_sync (serial, synced_at, checked_at, desired, "
        "in_step, errors, written, progress, last_error, limits) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            serial,
            summary.get("synced_at"),
            summary.get("checked_at"),
            summary.get("desired"),
            summary.get("in_step"),
            summary.get("errors"),
            summary.get("written"),
            summary.get("progress"),
            summary.get("last_error"),
            json.dumps(summary.get("limits") or []),
        ),
    )


def summary(conn: sqlite3.Connection, serial: str) -> dict[str, Any] | None:
    """A terminal's last sync, or None before the first."""
    row = conn.execute(
        "SELECT synced_at, checked_at, desired, in_step, errors, written, progress, last_error, "
        "limits FROM terminal_people_sync WHERE serial = ?",
        (serial,),
    ).fetchone()
    if row is None:
        return None
    keys = ("synced_at", "checked_at", "desired", "in_step", "errors", "written", "progress")
    out = dict(zip(keys, row[:7], strict=True))
    out["last_error"] = row[7]
    out["limits"] = json.loads(row[8] or "[]")
    out["people_errors"] = [
        {"user_id": r[0], "person_id": r[1], "error": r[2]}
        for r in conn.execute(
            "SELECT item_id, person_id, error FROM terminal_people WHERE serial = ? "
            "AND state = 'error' ORDER BY item_id LIMIT 100",
            (serial,),
        )
    ]
    return out


def of_person(conn: sqlite3.Connection, person_id: str) -> list[dict[str, Any]]:
    """Where a person is on the terminals: one entry per terminal that has a row for them."""
    return [
        {"serial": r[0], "user_id": r[1], "state": r[2], "error": r[3], "at": r[4]}
        for r in conn.execute(
            "SELECT serial, item_id, state, error, at FROM terminal_people "
            "WHERE person_id = ? ORDER BY serial",
            (person_id,),
        )
    ]
