"""Lockdown and free access, site-wide (scope ``*``) or per door: switched, audited, read.

Each switch is one transaction that updates ``modes`` and appends to ``mode_changes`` who did
it and when; the next decision reads the new state (``edged.access.lookup``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection
from dataclasses import asdict
from typing import Any, Literal

from edged.access import doorpeople, lookup
from edged.access import model as access
from edged.decide.policy import SITE, Mode
from edged.errors import ModeError

ModeName = Literal["lockdown", "free_access"]
MODE_NAMES: tuple[ModeName, ...] = ("lockdown", "free_access")


def _check(
    conn: sqlite3.Connection,
    scope: str,
    on: bool,
    group: str | None,
    schedule: str | None,
    doors: Collection[str] | None,
) -> None:
    """Refuse a scope, override group or schedule that does not exist (a typo, mostly)."""
    if scope != SITE and not access.NAME.fullmatch(scope):
        raise ModeError(f"{scope!r} is not a door name (or '*' for the whole site)")
    if scope != SITE and doors is not None and scope not in doors:
        switched = conn.execute("SELECT 1 FROM modes WHERE scope = ?", (scope,)).fetchone()
        if on or not switched:  # an old stray scope may still be switched off
            raise ModeError(access.unknown("door", scope, doors))
    for kind, name, table in (("group", group, "groups"), ("schedule", schedule, "schedules")):
        if name and not conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (name,)).fetchone():
            raise ModeError(access.unknown(kind, name, access.existing(conn, table)))


def switch(
    conn: sqlite3.Connection,
    scope: str,
    mode: ModeName,
    on: bool,
    by: str,
    group: str | None = None,
    schedule: str | None = None,
    now: float | None = None,
    doors: Collection[str] | None = None,
) -> Mode:
    """Turn a mode on or off for a scope and audit it; returns the scope's new state.

    ``doors`` are the door names a scope may be (``access.door_names``); None skips that check.
    """
    if mode not in MODE_NAMES:
        raise ModeError(f"{mode!r} is not one of {', '.join(MODE_NAMES)}")
    at = time.time() if now is None else now
    conn.execute("BEGIN IMMEDIATE")
    try:
        _check(conn, scope, on, group, schedule, doors)
        conn.execute("INSERT OR IGNORE INTO modes (scope) VALUES (?)", (scope,))
        if mode == "lockdown":
            conn.execute(
                "UPDATE modes SET lockdown = ?, override_group = ?, changed_at = ?, "
                "changed_by = ? WHERE scope = ?",
                (int(on), group if on else None, at, by, scope),
            )
            detail = f"override group {group}" if on and group else ""
        else:
            conn.execute(
                "UPDATE modes SET free_access = ?, free_schedule = ?, changed_at = ?, "
                "changed_by = ? WHERE scope = ?",
                (int(on), schedule if on else None, at, by, scope),
            )
            detail = f"schedule {schedule}" if on and schedule else ""
        conn.execute(
            "INSERT INTO mode_changes (at, by, scope, mode, state, detail) VALUES (?,?,?,?,?,?)",
            (at, by, scope, mode, "on" if on else "off", detail),
        )
        doorpeople.bump(conn)  # the terminals' rules follow a lockdown (terminals/peoplesync.py)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    site, door = lookup.modes(conn, scope)
    result = site if scope == SITE else door
    assert result is not None
    return result


def current(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every scope's modes, with who changed them last."""
    out = []
    for row in conn.execute(
        "SELECT scope, lockdown, override_group, free_access, free_schedule, changed_at, "
        "changed_by FROM modes ORDER BY scope"
    ):
        mode = Mode(row[0], bool(row[1]), row[2], bool(row[3]), row[4])
        out.append({**asdict(mode), "changed_at": row[5], "changed_by": row[6]})
    return out


def changes(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The audit trail of mode switches, newest first."""
    keys = ("id", "at", "by", "scope", "mode", "state", "detail")
    rows = conn.execute(
        f"SELECT {', '.join(keys)} FROM mode_changes ORDER BY id DESC LIMIT ?", (limit,)
    )
    return [dict(zip(keys, row, strict=True)) for row in rows]
