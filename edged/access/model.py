"""The access model beside the people: groups, schedules, holidays, doors and permissions.

Parsing validates rows from a document (docs/people.md) and reports every problem with its line;
writing happens inside the caller's transaction (``people.apply_document``).
"""

from __future__ import annotations

import difflib
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from edged.decide.policy import UNKNOWN_HANDLING
from edged.decide.schedule import DAYS, parse_clock

if TYPE_CHECKING:
    from edged.config import Config

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
KIND = re.compile(r"[a-z][a-z0-9_-]{0,31}")
SECTIONS = ("groups", "schedules", "holidays", "doors", "permissions")
ENTRY_MODES = range(1, 13)

Raw = dict[str, Any]


@dataclass
class GroupRow:
    """A group of people."""

    id: str
    name: str = ""
    line: int = 0

    @property
    def key(self) -> str:
        """What identifies a group."""
        return self.id

    def signature(self) -> tuple[Any, ...]:
        """What an import compares to tell 'updated' from 'unchanged'."""
        return (self.name,)


@dataclass
class ScheduleRow:
    """A weekly schedule: (day, start minute, end minute) periods."""

    id: str
    name: str = ""
    periods: list[tuple[str, int, int]] = field(default_factory=list)
    line: int = 0

    @property
    def key(self) -> str:
        """What identifies a schedule."""
        return self.id

    def signature(self) -> tuple[Any, ...]:
        """What an import compares to tell 'updated' from 'unchanged'."""
        return (self.name, tuple(self.periods))


@dataclass
class HolidayRow:
    """A special day, one-off (year set) or yearly."""

    name: str
    month: int
    day: int
    year: int | None = None
    kind: str = "holiday"
    line: int = 0

    @property
    def key(self) -> tuple[int | None, int, int, str]:
        """What identifies a holiday: its date and kind."""
        return (self.year, self.month, self.day, self.kind)

    def signature(self) -> tuple[Any, ...]:
        """What an import compares to tell 'updated' from 'unchanged'."""
        return (self.name,)


@dataclass
class DoorRow:
    """A door's policy settings."""

    name: str
    min_score: float | None = None
    min_liveness: float | None = None
    mask_required: bool = False
    entry_modes: list[int] | None = None
    anti_passback: int = 0
    unknown: str = "deny"
    lockdown_applies: bool = True
    free_access_applies: bool = True
    language: str | None = None
    line: int = 0

    @property
    def key(self) -> str:
        """What identifies a door."""
        return self.name

    def signature(self) -> tuple[Any, ...]:
        """What an import compares to tell 'updated' from 'unchanged'."""
        return self.values()[1:]

    def values(self) -> tuple[Any, ...]:
        """The row as stored in ``doors``."""
        modes = None if self.entry_modes is None else ",".join(map(str, self.entry_modes))
        return (
            self.name,
            self.min_score,
            self.min_liveness,
            int(self.mask_required),
            modes,
            self.anti_passback,
            self.unknown,
            int(self.lockdown_applies),
            int(self.free_access_applies),
            self.language,
        )


@dataclass
class PermissionRow:
    """Members of a group may use a door while a schedule is open (None: always)."""

    group: str
    door: str
    schedule: str | None = None
    line: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a permission."""
        return (self.group, self.door, self.schedule or "")

    def signature(self) -> tuple[Any, ...]:
        """A permission is all key: present or not."""
        return ()


class Problems:
    """Collects problems as ``line N: field: text``."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, line: int, text: str) -> None:
        """Note a problem found on ``line``."""
        self.items.append(f"line {line}: {text}")


def _unknown_keys(raw: Raw, allowed: tuple[str, ...], line: int, out: Problems) -> None:
    extra = sorted(set(raw) - set(allowed))
    if extra:
        out.add(line, f"unknown field(s) {', '.join(extra)}")


def _name(raw: Raw, key: str, line: int, out: Problems, required: bool = True) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            out.add(line, f"{key}: required")
        return ""
    text = str(value).strip()
    if not NAME.fullmatch(text):
        out.add(line, f"{key}: {text!r} is not a name (letters, digits, '_.:@-', up to 64)")
    return text


def _number(raw: Raw, key: str, line: int, out: Problems, low: float, high: float) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        out.add(line, f"{key}: {value!r} is not a number from {low} to {high}")
        return None
    return value


def _flag(raw: Raw, key: str, line: int, out: Problems, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        out.add(line, f"{key}: {value!r} is not true or false")
        return default
    return value


def parse_group(raw: Raw, line: int, out: Problems) -> GroupRow:
    """Validate one group."""
    _unknown_keys(raw, ("id", "name"), line, out)
    return GroupRow(_name(raw, "id", line, out), str(raw.get("name") or ""), line)


def parse_schedule(raw: Raw, line: int, out: Problems) -> ScheduleRow:
    """Validate one schedule and its periods."""
    _unknown_keys(raw, ("id", "name", "periods"), line, out)
    row = ScheduleRow(_name(raw, "id", line, out), str(raw.get("name") or ""), line=line)
    periods = raw.get("periods") or []
    if not isinstance(periods, list):
        out.add(line, "periods: expected a list")
        return row
    for index, period in enumerate(periods):
        where = f"periods[{index}]"
        if not isinstance(period, dict):
            out.add(line, f"{where}: expected an object")
            continue
        _unknown_keys(period, ("days", "start", "end"), line, out)
        days = period.get("days")
        if isinstance(days, str):
            days = [days]
        if not isinstance(days, list) or not days:
            out.add(line, f"{where}.days: expected weekday names or holiday kinds")
            continue
        try:
            start = parse_clock(str(period.get("start", "")))
            end = parse_clock(str(period.get("end", "")), end=True)
        except ValueError as exc:
            out.add(line, f"{where}: {exc}")
            continue
        if start == end:
            out.add(line, f"{where}: start and end are equal (use 00:00-24:00 for all day)")
            continue
        for day in days:
            text = str(day).strip().lower()
            if text not in DAYS and not KIND.fullmatch(text):
                out.add(line, f"{where}.days: {day!r} is neither a weekday nor a holiday kind")
            row.periods.append((text, start, end))
    return row


def parse_holiday(raw: Raw, line: int, out: Problems) -> HolidayRow:
    """Validate one holiday: ``date`` is YYYY-MM-DD (one-off) or MM-DD (every year)."""
    _unknown_keys(raw, ("name", "date", "kind"), line, out)
    text = str(raw.get("date") or "").strip()
    kind = str(raw.get("kind") or "holiday").strip()
    if not KIND.fullmatch(kind) or kind in DAYS:
        out.add(line, f"kind: {kind!r} is not a holiday kind (lower-case, not a weekday)")
    year: int | None = None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            year = day.year
        elif len(text) == 5:
            day = date.fromisoformat(f"2000-{text}")  # a leap year: 02-29 is valid
        else:
            raise ValueError
    except ValueError:
        out.add(line, f"date: {text!r} is not YYYY-MM-DD (one day) or MM-DD (every year)")
        return HolidayRow(str(raw.get("name") or ""), 1, 1, None, kind, line)
    return HolidayRow(str(raw.get("name") or ""), day.month, day.day, year, kind, line)


DOOR_FIELDS = (
    "name",
    "min_score",
    "min_liveness",
    "mask_required",
    "entry_modes",
    "anti_passback",
    "unknown",
    "lockdown_applies",
    "free_access_applies",
    "language",
)


def parse_door(raw: Raw, line: int, out: Problems) -> DoorRow:
    """Validate one door's settings."""
    _unknown_keys(raw, DOOR_FIELDS, line, out)
    row = DoorRow(_name(raw, "name", line, out), line=line)
    row.min_score = _number(raw, "min_score", line, out, 0, 100)
    row.min_liveness = _number(raw, "min_liveness", line, out, 0, 100)
    row.mask_required = _flag(raw, "mask_required", line, out, False)
    row.lockdown_applies = _flag(raw, "lockdown_applies", line, out, True)
    row.free_access_applies = _flag(raw, "free_access_applies", line, out, True)
    passback = _number(raw, "anti_passback", line, out, 0, 86400)
    row.anti_passback = int(passback or 0)
    modes = raw.get("entry_modes")
    if modes is not None:
        if not isinstance(modes, list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m in ENTRY_MODES for m in modes
        ):
            out.add(line, f"entry_modes: {modes!r} is not a list of entry modes 1-12")
        else:
            row.entry_modes = sorted(set(modes))
    row.unknown = str(raw.get("unknown") or "deny")
    if row.unknown not in UNKNOWN_HANDLING:
        out.add(line, f"unknown: {row.unknown!r} is not one of {', '.join(UNKNOWN_HANDLING)}")
    language = raw.get("language")
    row.language = str(language) if language else None
    return row


def parse_permission(raw: Raw, line: int, out: Problems) -> PermissionRow:
    """Validate one permission."""
    _unknown_keys(raw, ("group", "door", "schedule"), line, out)
    group = _name(raw, "group", line, out)
    door = _name(raw, "door", line, out)
    sched = _name(raw, "schedule", line, out, required=False) or None
    return PermissionRow(group, door, sched, line)


PARSERS = {
    "groups": parse_group,
    "schedules": parse_schedule,
    "holidays": parse_holiday,
    "doors": parse_door,
    "permissions": parse_permission,
}


def duplicates(rows: list[Any], key: Any, label: str, out: Problems) -> None:
    """Report rows whose key repeats an earlier row's."""
    seen: dict[Any, int] = {}
    for row in rows:
        k = key(row)
        if k in seen:
            out.add(row.line, f"{label} {k!r} already on line {seen[k]}")
        else:
            seen[k] = row.line


# ----- names the configuration knows -------------------------------------------------------


def door_names(cfg: Config) -> set[str]:
    """Every door the configuration knows: ``[[doors]]`` and the doors terminals serve."""
    return {d.name for d in cfg.doors} | {t.door or t.name for t in cfg.terminals}


def suggest(name: str, known: Iterable[str]) -> str:
    """``; did you mean 'x'?`` with the known name closest to ``name``, or nothing."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown(kind: str, name: str, known: Iterable[str]) -> str:
    """``kind 'name' does not exist``, with the closest known name as a suggestion."""
    names = sorted(known)
    hint = suggest(name, names) or f" (known: {', '.join(names) or 'none'})"
    return f"{kind} {name!r} does not exist{hint}"


def one_typo_apart(a: str, b: str) -> bool:
    """Whether two different names differ by one insertion, deletion, change or swap (any case)."""
    if a == b:
        return False
    x, y = a.casefold(), b.casefold()
    if x == y:
        return True
    if len(x) > len(y):
        x, y = y, x
    if len(y) - len(x) > 1:
        return False
    start = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), len(x))
    if len(x) < len(y):
        return x[start:] == y[start + 1 :]
    swapped = start + 1 < len(x) and x[start] == y[start + 1] and x[start + 1] == y[start]
    return x[start + 1 :] == y[start + 1 :] or (swapped and x[start + 2 :] == y[start + 2 :])


# ----- writing (inside the caller's transaction) --------------------------------------------


def existing(conn: sqlite3.Connection, table: str, column: str = "id") -> set[str]:
    """The keys a small table holds."""
    return {r[0] for r in conn.execute(f"SELECT {column} FROM {table}")}


def write_groups(conn: sqlite3.Connection, rows: list[GroupRow], replace: bool) -> None:
    """Upsert groups (``replace``: delete the others, and their memberships and permissions)."""
    if replace:
        keep = {r.id for r in rows}
        for gid in existing(conn, "groups") - keep:
            conn.execute("DELETE FROM groups WHERE id = ?", (gid,))
    conn.executemany(
        "INSERT INTO groups (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET "
        "name = excluded.name",
        [(r.id, r.name) for r in rows],
    )


def ensure_groups(conn: sqlite3.Connection, ids: set[str]) -> None:
    """Create groups referenced by people or permissions but not defined anywhere."""
    conn.executemany("INSERT OR IGNORE INTO groups (id) VALUES (?)", [(g,) for g in sorted(ids)])


def write_schedules(conn: sqlite3.Connection, rows: list[ScheduleRow], replace: bool) -> None:
    """Upsert schedules with their periods."""
    if replace:
        for sid in existing(conn, "schedules") - {r.id for r in rows}:
            conn.execute("DELETE FROM schedules WHERE id = ?", (sid,))
    for row in rows:
        conn.execute(
            "INSERT INTO schedules (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET "
            "name = excluded.name",
            (row.id, row.name),
        )
        conn.execute("DELETE FROM schedule_periods WHERE schedule_id = ?", (row.id,))
        conn.executemany(
            "INSERT INTO schedule_periods (schedule_id, day, start_min, end_min) VALUES (?,?,?,?)",
            [(row.id, *p) for p in row.periods],
        )


def write_holidays(conn: sqlite3.Connection, rows: list[HolidayRow], replace: bool) -> None:
    """Add holidays (same date and kind: renamed); ``replace``: exactly these."""
    if replace:
        conn.execute("DELETE FROM holidays")
    for row in rows:
        conn.execute(
            "DELETE FROM holidays WHERE year IS ? AND month = ? AND day = ? AND kind = ?", row.key
        )
        conn.execute(
            "INSERT INTO holidays (name, kind, year, month, day) VALUES (?,?,?,?,?)",
            (row.name, row.kind, row.year, row.month, row.day),
        )


def write_doors(conn: sqlite3.Connection, rows: list[DoorRow], replace: bool) -> None:
    """Upsert door settings."""
    if replace:
        conn.execute("DELETE FROM doors")
    conn.executemany(
        "INSERT OR REPLACE INTO doors (name, min_score, min_liveness, mask_required, entry_modes, "
        "anti_passback, unknown, lockdown_applies, free_access_applies, language) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)",
        [r.values() for r in rows],
    )


def write_permissions(conn: sqlite3.Connection, rows: list[PermissionRow], replace: bool) -> None:
    """Add permissions (``replace``: exactly these)."""
    if replace:
        conn.execute("DELETE FROM permissions")
    conn.executemany(
        "INSERT OR IGNORE INTO permissions (group_id, door, schedule_id) VALUES (?,?,?)",
        [(r.group, r.door, r.schedule) for r in rows],
    )


def signatures(conn: sqlite3.Connection) -> dict[str, dict[Any, tuple[Any, ...]]]:
    """Each section's rows in the database as key -> signature (see the row classes)."""
    periods: dict[str, list[tuple[str, int, int]]] = {}
    for sid, day, start, end in conn.execute(
        "SELECT schedule_id, day, start_min, end_min FROM schedule_periods ORDER BY id"
    ):
        periods.setdefault(sid, []).append((day, start, end))
    doors = conn.execute(f"SELECT {', '.join(DOOR_FIELDS)} FROM doors")
    holidays = conn.execute("SELECT year, month, day, kind, name FROM holidays")
    permissions = conn.execute("SELECT group_id, door, schedule_id FROM permissions")
    return {
        "groups": {i: (n,) for i, n in conn.execute("SELECT id, name FROM groups")},
        "schedules": {
            i: (n, tuple(periods.get(i, [])))
            for i, n in conn.execute("SELECT id, name FROM schedules")
        },
        "holidays": {tuple(r[:4]): (r[4],) for r in holidays},
        "doors": {r[0]: tuple(r[1:]) for r in doors},
        "permissions": {(g, d, s or ""): () for g, d, s in permissions},
    }


def export_tables(conn: sqlite3.Connection) -> dict[str, list[Any]]:
    """Groups, schedules, holidays, doors and permissions as plain data (for export)."""
    periods: dict[str, list[dict[str, Any]]] = {}
    for sid, day, start, end in conn.execute(
        "SELECT schedule_id, day, start_min, end_min FROM schedule_periods ORDER BY id"
    ):
        periods.setdefault(sid, []).append(
            {"days": [day], "start": _clock(start), "end": _clock(end)}
        )
    doors = []
    for row in conn.execute(f"SELECT {', '.join(DOOR_FIELDS)} FROM doors ORDER BY name"):
        door = dict(zip(DOOR_FIELDS, row, strict=True))
        for key in ("mask_required", "lockdown_applies", "free_access_applies"):
            door[key] = bool(door[key])
        modes = door["entry_modes"]
        door["entry_modes"] = None if modes is None else [int(m) for m in modes.split(",") if m]
        doors.append(door)
    return {
        "groups": [
            {"id": i, "name": n} for i, n in conn.execute("SELECT id, name FROM groups ORDER BY id")
        ],
        "schedules": [
            {"id": i, "name": n, "periods": periods.get(i, [])}
            for i, n in conn.execute("SELECT id, name FROM schedules ORDER BY id")
        ],
        "holidays": [
            {"name": n, "kind": k, "date": (f"{y:04d}-" if y else "") + f"{m:02d}-{d:02d}"}
            for n, k, y, m, d in conn.execute(
                "SELECT name, kind, year, month, day FROM holidays ORDER BY month, day, year"
            )
        ],
        "doors": doors,
        "permissions": [
            {"group": g, "door": d, "schedule": s}
            for g, d, s in conn.execute(
                "SELECT group_id, door, schedule_id FROM permissions ORDER BY door, group_id, "
                "schedule_id"
            )
        ],
    }


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
