"""Reads the plain-data ``View`` one decision needs from the access model, by index only.

Every query is a primary-key or index lookup bounded by the person, the door and the day: with
100,000 people, 200 groups and 64 doors a decision reads a few dozen rows and scans no table.
The database is read afresh for every decision, so an import or a mode switch applies to the very
next request without a restart (docs/performance.md measures the cost).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import timedelta, tzinfo

from edged.decide import policy, schedule
from edged.decide.policy import SITE, DoorSettings, Mode, Permission, Person, View
from edged.decide.schedule import Holiday, Period, Schedule
from edged.model import Event
from edged.store import queries

_FIND = (
    "SELECT p.id, p.name, p.blocked, p.valid_from, p.valid_until, p.type FROM credentials c "
    "JOIN people p ON p.id = c.person_id WHERE c.kind = ? AND c.value = ?"
)


def lookup_keys(event: Event) -> list[tuple[str, str]]:
    """The event's credentials as (kind, value), in the order they are tried."""
    keys: list[tuple[str, str]] = []
    user = event.user
    if user is not None:
        for kind, value in (
            ("user_id", user.user_id),
            ("ic", user.ic_number),
            ("job", user.job_number),
            ("id_number", user.id_number),
        ):
            if value:
                keys.append((kind, value))
    if event.qrcode:
        keys.append(("qr", event.qrcode))
    return keys


def find_person(conn: sqlite3.Connection, event: Event) -> Person | None:
    """The cached person matching the event's credentials, strongest first."""
    for kind, value in lookup_keys(event):
        row = conn.execute(_FIND, (kind, value)).fetchone()
        if row is not None:
            return Person(
                id=row[0],
                name=row[1],
                blocked=bool(row[2]),
                valid_from=row[3],
                valid_until=row[4],
                type=row[5],
            )
    return None


def door_settings(conn: sqlite3.Connection, door: str) -> DoorSettings:
    """The door's policy settings, defaults when it has no row."""
    row = conn.execute(
        "SELECT min_score, min_liveness, mask_required, entry_modes, anti_passback, unknown, "
        "lockdown_applies, free_access_applies, language FROM doors WHERE name = ?",
        (door,),
    ).fetchone()
    if row is None:
        return DoorSettings(door)
    modes = row[3]
    return DoorSettings(
        name=door,
        min_score=row[0],
        min_liveness=row[1],
        mask_required=bool(row[2]),
        entry_modes=None if modes is None else frozenset(int(m) for m in modes.split(",") if m),
        anti_passback=int(row[4]),
        unknown=row[5],
        lockdown_applies=bool(row[6]),
        free_access_applies=bool(row[7]),
        language=row[8],
    )


def modes(conn: sqlite3.Connection, door: str) -> tuple[Mode | None, Mode | None]:
    """The site-wide mode and the door's own mode (None where never set)."""
    found: dict[str, Mode] = {}
    for row in conn.execute(
        "SELECT scope, lockdown, override_group, free_access, free_schedule FROM modes "
        "WHERE scope IN (?, ?)",
        (SITE, door),
    ):
        found[row[0]] = Mode(row[0], bool(row[1]), row[2], bool(row[3]), row[4])
    return found.get(SITE), found.get(door)


def groups_of(conn: sqlite3.Connection, person_id: str) -> frozenset[str]:
    """The groups a person belongs to."""
    rows = conn.execute("SELECT group_id FROM person_groups WHERE person_id = ?", (person_id,))
    return frozenset(r[0] for r in rows)


def permissions(conn: sqlite3.Connection, door: str, groups: Iterable[str]) -> list[Permission]:
    """The door's permissions for these groups."""
    wanted = sorted(groups)
    if not wanted:
        return []
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(
        f"SELECT group_id, schedule_id FROM permissions WHERE door = ? AND group_id IN ({marks})",
        (door, *wanted),
    )
    return [Permission(r[0], door, r[1]) for r in rows]


def schedules(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, Schedule]:
    """The named schedules with their periods (unknown ids are left out)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    out: dict[str, list[Period]] = {
        r[0]: [] for r in conn.execute(f"SELECT id FROM schedules WHERE id IN ({marks})", wanted)
    }
    for row in conn.execute(
        "SELECT schedule_id, day, start_min, end_min FROM schedule_periods "
        f"WHERE schedule_id IN ({marks}) ORDER BY id",
        wanted,
    ):
        out[row[0]].append(Period(row[1], row[2], row[3]))
    return {sid: Schedule(sid, tuple(periods)) for sid, periods in out.items()}


def holidays_near(conn: sqlite3.Connection, now: float, tz: tzinfo) -> tuple[Holiday, ...]:
    """The holidays on the site's today and yesterday (yesterday's plan may run past midnight)."""
    today = schedule.local_time(now, tz).date()
    found: list[Holiday] = []
    for day in (today - timedelta(days=1), today):
        for row in conn.execute(
            "SELECT name, month, day, year, kind FROM holidays WHERE month = ? AND day = ? "
            "AND (year IS NULL OR year = ?)",
            (day.month, day.day, day.year),
        ):
            found.append(Holiday(row[0], row[1], row[2], row[3], row[4]))
    return tuple(found)


def load(
    conn: sqlite3.Connection, event: Event | None, door: str, now: float, tz: tzinfo
) -> tuple[DoorSettings, View]:
    """The door's settings and the decision view for ``event`` (None: no person, for modes)."""
    settings = door_settings(conn, door)
    site_mode, door_mode = modes(conn, door)
    person = find_person(conn, event) if event is not None else None
    groups = groups_of(conn, person.id) if person else frozenset()
    perms = permissions(conn, door, groups)
    wanted = {p.schedule for p in perms if p.schedule}
    wanted |= {m.free_schedule for m in (site_mode, door_mode) if m and m.free_schedule}
    view = View(
        tz=tz,
        person=person,
        groups=groups,
        permissions=tuple(perms),
        schedules=schedules(conn, wanted),
        holidays=holidays_near(conn, now, tz),
        site_mode=site_mode,
        door_mode=door_mode,
        last_pass=queries.last_pass(conn, person.id, door)
        if person and settings.anti_passback
        else None,
    )
    return settings, view


def free_access_now(conn: sqlite3.Connection, door: str, now: float, tz: tzinfo) -> bool:
    """Whether ``door`` should stand unlocked now: for the door driver, one indexed read."""
    settings, view = load(conn, None, door, now, tz)
    return policy.free_access_active(settings, view, now)
