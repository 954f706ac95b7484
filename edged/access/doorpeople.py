"""Everything one door's terminals are derived from: its people, permissions, schedules, modes.

The read the people sync makes (edged/terminals/peoplemap.py maps it to a terminal's library):
every person with a group that has a permission at the door (or is a mode's override group),
the door's permissions and settings, the schedules they name, all holidays, the modes. Also the
access model's change counter, which every import and removal bumps in its transaction, so the
daemon notices a change committed by another process (``edged people import``) at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from edged.access import lookup
from edged.decide.policy import DoorSettings, Mode, Permission
from edged.decide.schedule import Holiday, Schedule
from edged.store.urgency import Urgency, paced


@dataclass(frozen=True, slots=True)
class Member:
    """A person as the mapping to a terminal needs them."""

    id: str
    name: str
    type: str = "employee"
    blocked: bool = False
    valid_from: float | None = None
    valid_until: float | None = None
    groups: frozenset[str] = frozenset()
    credentials: tuple[tuple[str, str], ...] = ()
    face: str | None = None  # the photo's digest (edged/access/faces.py)


@dataclass(frozen=True)
class Site:
    """What one door's terminals are derived from."""

    door: DoorSettings
    permissions: tuple[Permission, ...] = ()  # this door's
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    holidays: tuple[Holiday, ...] = ()
    site_mode: Mode | None = None
    door_mode: Mode | None = None
    people: tuple[Member, ...] = ()


def load(conn: sqlite3.Connection, door: str, urgency: Urgency | None = None) -> Site:
    """The door's site view, read in one transaction (a consistent snapshot).

    ``urgency``: a worker thread reading it steps aside for remote-auth answers between rows.
    """
    started = not conn.in_transaction
    if started:
        conn.execute("BEGIN")
    try:
        return _load(conn, door, urgency)
    finally:
        if started:
            conn.execute("COMMIT")


def _load(conn: sqlite3.Connection, door: str, urgency: Urgency | None) -> Site:
    settings = lookup.door_settings(conn, door)
    site_mode, door_mode = lookup.modes(conn, door)
    permissions = tuple(
        Permission(r[0], door, r[1])
        for r in conn.execute(
            "SELECT group_id, schedule_id FROM permissions WHERE door = ? ORDER BY group_id",
            (door,),
        )
    )
    wanted = {p.group for p in permissions}
    wanted |= {m.override_group for m in (site_mode, door_mode) if m and m.override_group}
    schedules = lookup.schedules(conn, {p.schedule for p in permissions if p.schedule})
    holidays = tuple(
        Holiday(r[0], r[1], r[2], r[3], r[4])
        for r in conn.execute("SELECT name, month, day, year, kind FROM holidays")
    )
    groups: dict[str, set[str]] = {}
    marks = ",".join("?" * len(wanted))
    if wanted:
        rows = conn.execute(
            f"SELECT person_id, group_id FROM person_groups WHERE person_id IN "
            f"(SELECT person_id FROM person_groups WHERE group_id IN ({marks}))",
            sorted(wanted),
        )
        for pid, gid in paced(rows, urgency):
            groups.setdefault(pid, set()).add(gid)
    creds: dict[str, list[tuple[str, str]]] = {}
    people = []
    sets: dict[frozenset[str], frozenset[str]] = {}  # 10,000 people in a few groups: a few
    types: dict[str, str] = {}  # frozensets and type strings, not 10,000 of each
    if groups:
        ids = sorted(groups)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            q = ",".join("?" * len(chunk))
            for kind, value, pid in conn.execute(
                f"SELECT kind, value, person_id FROM credentials WHERE person_id IN ({q})", chunk
            ):
                creds.setdefault(pid, []).append((kind, value))
            rows = conn.execute(
                "SELECT id, name, type, blocked, valid_from, valid_until, face FROM people "
                f"WHERE id IN ({q})",
                chunk,
            )
            for row in paced(rows, urgency):
                people.append(
                    Member(
                        id=row[0],
                        name=row[1],
                        type=types.setdefault(row[2], row[2]),
                        blocked=bool(row[3]),
                        valid_from=row[4],
                        valid_until=row[5],
                        groups=sets.setdefault(g := frozenset(groups.pop(row[0])), g),
                        credentials=tuple(sorted(creds.pop(row[0], []))),
                        face=row[6],
                    )
                )
    return Site(
        door=settings,
        permissions=permissions,
        schedules=schedules,
        holidays=holidays,
        site_mode=site_mode,
        door_mode=door_mode,
        people=tuple(sorted(people, key=lambda m: m.id)),
    )


def version(conn: sqlite3.Connection) -> int:
    """The access model's change counter (0 before the first change)."""
    row = conn.execute("SELECT version FROM access_changes WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def bump(conn: sqlite3.Connection) -> None:
    """Count one change (inside the caller's write transaction)."""
    conn.execute("UPDATE access_changes SET version = version + 1 WHERE id = 1")
