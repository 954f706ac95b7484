"""The local people cache: all-or-nothing imports, export, listing and removal.

File formats (CSV with a header row; JSON: a list of people, or a document with people, groups,
schedules, holidays, doors and permissions) are documented in docs/people.md. Credential and
group columns may hold several values separated by ``|``.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from edged.access import importfile, lookup
from edged.access import model as access
from edged.decide.policy import Person
from edged.errors import ImportFileError
from edged.model import Event

# column -> credential kind stored in the database
CREDENTIAL_COLUMNS = {
    "user_id": "user_id",
    "ic_number": "ic",
    "job_number": "job",
    "id_number": "id_number",
    "qr": "qr",
}
PERSON_COLUMNS = ("id", "name", "type", "valid_from", "valid_until", "blocked", "notes")
COLUMNS = (*PERSON_COLUMNS, *CREDENTIAL_COLUMNS, "groups")
PERSON_TYPES = ("employee", "visitor", "contractor", "other")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # line breaks, tabs, NUL: never in a name or credential
T = TypeVar("T")


@dataclass
class PersonRow:
    """One validated person from an import file."""

    id: str
    name: str
    type: str = "employee"
    valid_from: float | None = None
    valid_until: float | None = None
    blocked: bool = False
    notes: str = ""
    credentials: list[tuple[str, str]] = field(default_factory=list)
    line: int = 0
    groups: list[str] | None = None  # None: memberships left as they are


def find_person(conn: sqlite3.Connection, event: Event) -> Person | None:
    """The cached person matching the event's credentials, strongest first."""
    return lookup.find_person(conn, event)


# ----- parsing ------------------------------------------------------------------------------


def _parse_time(value: Any, tz: ZoneInfo, end: bool) -> float:
    """ISO date or date-time, naive ones in the site's zone; an end date is inclusive."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)  # epoch seconds (JSON)
    text = str(value).strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=tz)
            return moment.timestamp() + (86400 if end else 0)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO date (2026-01-31) or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.timestamp()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _validate(raw: dict[str, Any], line: int, tz: ZoneInfo) -> tuple[PersonRow | None, list[str]]:
    problems: list[str] = []
    unknown = sorted(set(raw) - set(COLUMNS))
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    pid = _as_text(raw.get("id"))
    name = _as_text(raw.get("name"))
    if not pid:
        problems.append("id: required")
    elif len(pid) > 64:
        problems.append("id: longer than 64 characters")
    if not name:
        problems.append("name: required")
    for column, text in (("id", pid), ("name", name)):
        if CONTROL.search(text):
            problems.append(f"{column}: holds a line break or another control character")
    kind = _as_text(raw.get("type")) or "employee"
    if kind not in PERSON_TYPES:
        problems.append(f"type: {kind!r} is not one of {', '.join(PERSON_TYPES)}")
    times: dict[str, float | None] = {}
    for column in ("valid_from", "valid_until"):
        value = raw.get(column)
        times[column] = None
        if _as_text(value):
            try:
                times[column] = _parse_time(value, tz, end=column == "valid_until")
            except ValueError as exc:
                problems.append(f"{column}: {exc}")
    start, stop = times["valid_from"], times["valid_until"]
    if start is not None and stop is not None and stop <= start:
        problems.append("valid_until: must be after valid_from")
    blocked_text = _as_text(raw.get("blocked")).lower()
    if blocked_text not in ("", "0", "1", "true", "false", "yes", "no"):
        problems.append(f"blocked: {blocked_text!r} is not true or false")
    credentials: list[tuple[str, str]] = []
    for column, cred_kind in CREDENTIAL_COLUMNS.items():
        value = raw.get(column)
        values = value if isinstance(value, list) else _as_text(value).split("|")
        for item in values:
            text = _as_text(item)
            if CONTROL.search(text):
                problems.append(f"{column}: holds a line break or another control character")
            elif text:
                credentials.append((cred_kind, text))
    if pid and not any(k == "user_id" for k, _ in credentials):
        credentials.append(("user_id", pid))
    groups = _groups(raw, problems)
    if problems:
        return None, [f"line {line}: {p}" for p in problems]
    person = PersonRow(
        id=pid,
        name=name,
        type=kind,
        valid_from=start,
        valid_until=stop,
        blocked=blocked_text in ("1", "true", "yes"),
        notes=_as_text(raw.get("notes")),
        credentials=credentials,
        line=line,
        groups=groups,
    )
    return person, []


def _groups(raw: dict[str, Any], problems: list[str]) -> list[str] | None:
    if "groups" not in raw:
        return None
    value = raw["groups"]
    items = value if isinstance(value, list) else _as_text(value).split("|")
    groups = sorted({_as_text(g) for g in items if _as_text(g)})
    for group in groups:
        if not access.NAME.fullmatch(group):
            problems.append(f"groups: {group!r} is not a group id (letters, digits, '_.:@-')")
    return groups


def parse_file(path: Path, tz: ZoneInfo, fmt: str | None = None) -> list[PersonRow]:
    """Parse and validate a people file; raise ImportFileError listing every bad row."""
    doc = load_file(path, tz, fmt)
    if doc.people is None:
        raise ImportFileError(['line 1: expected a list of people or {"people": [...]}'])
    return doc.people


def load_file(path: Path, tz: ZoneInfo, fmt: str | None = None) -> Document:
    """Parse and validate a whole file (CSV people, or a JSON list or document)."""
    data, lines = importfile.read(path, fmt)
    return parse_document(data, tz, lines)


def parse_records(records: list[tuple[int, dict[str, Any]]], tz: ZoneInfo) -> list[PersonRow]:
    """Validate parsed rows: every problem at once, including duplicates across rows."""
    people: list[PersonRow] = []
    problems: list[str] = []
    ids: dict[str, int] = {}
    creds: dict[tuple[str, str], int] = {}
    for line, raw in records:
        person, errors = _validate(raw, line, tz)
        problems.extend(errors)
        if person is None:
            continue
        if person.id in ids:
            problems.append(f"line {line}: id {person.id!r} already on line {ids[person.id]}")
            continue
        ids[person.id] = line
        for cred in person.credentials:
            if cred in creds:
                problems.append(
                    f"line {line}: {cred[0]} {mask(cred[1])} already on line {creds[cred]}"
                )
            creds[cred] = line
        people.append(person)
    if problems:
        raise ImportFileError(problems)
    return people


def mask(value: str) -> str:
    """Credentials are never printed in full: at most the last 4 characters, half at most."""
    keep = min(4, len(value) // 2)
    return "*" * (len(value) - keep) + value[len(value) - keep :]


# ----- documents ----------------------------------------------------------------------------


@dataclass
class Document:
    """A validated import: each section None when the file does not have it."""

    people: list[PersonRow] | None = None
    groups: list[access.GroupRow] | None = None
    schedules: list[access.ScheduleRow] | None = None
    holidays: list[access.HolidayRow] | None = None
    doors: list[access.DoorRow] | None = None
    permissions: list[access.PermissionRow] | None = None


SECTIONS = ("people", *access.SECTIONS)


def _section(data: dict[str, Any], name: str, lines: dict[str, list[int]], out: list[str]) -> Any:
    items = data.get(name)
    if items is None:
        return None
    where = lines.get(name, [])
    if not isinstance(items, list):
        out.append(f"{name}: expected a list")
        return None
    records = []
    for index, item in enumerate(items):
        line = where[index] if index < len(where) else index + 1
        if not isinstance(item, dict):
            out.append(f"line {line}: {name}[{index}]: expected an object")
            continue
        records.append((line, item))
    return records


def parse_document(data: Any, tz: ZoneInfo, lines: dict[str, list[int]] | None = None) -> Document:
    """Validate a document (or a bare list of people); every problem at once."""
    lines = lines or {}
    if isinstance(data, list):
        data = {"people": data}
    if not isinstance(data, dict):
        raise ImportFileError(["line 1: expected a list of people or an object of sections"])
    problems = [f"{key}: unknown section" for key in sorted(set(data) - set(SECTIONS))]
    doc = Document()
    records = _section(data, "people", lines, problems)
    if records is not None:
        try:
            doc.people = parse_records(records, tz)
        except ImportFileError as exc:
            problems.extend(exc.problems)
    found = access.Problems()
    for name, parse in access.PARSERS.items():
        records = _section(data, name, lines, problems)
        if records is not None:
            setattr(doc, name, [parse(raw, line, found) for line, raw in records])
    _duplicates(doc, found)
    problems.extend(found.items)
    if problems:
        raise ImportFileError(problems)
    return doc


def _duplicates(doc: Document, found: access.Problems) -> None:
    for name, key in (
        ("groups", lambda r: r.id),
        ("schedules", lambda r: r.id),
        ("holidays", lambda r: r.key),
        ("doors", lambda r: r.name),
        ("permissions", lambda r: r.key),
    ):
        rows = getattr(doc, name)
        if rows:
            access.duplicates(rows, key, name[:-1], found)


def warnings(doc: Document, doors: Collection[str], groups: Collection[str]) -> list[str]:
    """What looks like a typo in a valid document: doors not configured, near-duplicate groups.

    ``doors`` are the configured door names (``access.door_names``), ``groups`` the groups the
    database holds. Only groups the import would create on the fly (named by a person or a
    permission, defined nowhere) are compared: a ``groups`` entry is taken as meant.
    """
    named = [
        (p.line, f"permission for group {p.group!r} names", p.door) for p in doc.permissions or ()
    ]
    named += [(d.line, "settings for", d.name) for d in doc.doors or ()]
    out = [
        f"line {line}: {what} door {door!r}, which is not configured" + access.suggest(door, doors)
        for line, what, door in named
        if door not in doors
    ]
    return out + _new_group_warnings(doc, set(groups))


def _new_group_warnings(doc: Document, existing: set[str]) -> list[str]:
    """New groups one typo away from a group that exists or that the document defines."""
    known = existing | {g.id for g in doc.groups or ()}
    first: dict[str, int] = {}
    for person in doc.people or ():
        for group in person.groups or ():
            first.setdefault(group, person.line)
    for permission in doc.permissions or ():
        first.setdefault(permission.group, permission.line)
    out = []
    for group, line in first.items():
        if group in known:
            continue
        close = sorted(k for k in known if access.one_typo_apart(group, k))
        if close:
            out.append(f"line {line}: group {group!r} is new, one typo away from {close[0]!r}")
    return out


# ----- applying -----------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What an import changed (or would change, for a dry run)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _current(conn: sqlite3.Connection) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT id, name, type, valid_from, valid_until, blocked, notes FROM people"
    ).fetchall()
    creds: dict[str, list[tuple[str, str]]] = {}
    for kind, value, pid in conn.execute("SELECT kind, value, person_id FROM credentials"):
        creds.setdefault(pid, []).append((kind, value))
    groups: dict[str, list[str]] = {}
    for pid, gid in conn.execute("SELECT person_id, group_id FROM person_groups"):
        groups.setdefault(pid, []).append(gid)
    return {
        r[0]: (*tuple(r)[1:], sorted(creds.get(r[0], [])), sorted(groups.get(r[0], [])))
        for r in rows
    }


def _signature(p: PersonRow, old_groups: list[str]) -> tuple[Any, ...]:
    groups = old_groups if p.groups is None else sorted(p.groups)
    return (
        p.name,
        p.type,
        p.valid_from,
        p.valid_until,
        int(p.blocked),
        p.notes,
        sorted(p.credentials),
        groups,
    )


def _transaction(conn: sqlite3.Connection, dry_run: bool, work: Callable[[], T]) -> T:
    """Run ``work`` in one write transaction; a dry run is rolled back, an error too."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            raise ImportFileError([f"the database refused the change: {exc}"]) from None
        raise
    return result


def apply(
    conn: sqlite3.Connection, people: list[PersonRow], replace: bool, dry_run: bool = False
) -> ImportResult:
    """Upsert people in one transaction (``replace``: remove everyone else); all or nothing."""
    return _transaction(conn, dry_run, lambda: _apply_people(conn, people, replace))


def _apply_people(conn: sqlite3.Connection, people: list[PersonRow], replace: bool) -> ImportResult:
    result = ImportResult()
    current = _current(conn)
    incoming = {p.id for p in people}
    owners = {
        (k, v): pid for k, v, pid in conn.execute("SELECT kind, value, person_id FROM credentials")
    }
    problems = []
    for p in people:
        for cred in p.credentials:
            owner = owners.get(cred)
            if owner and owner != p.id and owner not in incoming and not replace:
                problems.append(
                    f"line {p.line}: {cred[0]} {mask(cred[1])} belongs to person {owner!r}"
                )
    if problems:
        raise ImportFileError(problems)
    for p in people:
        old = current.get(p.id)
        if old is None:
            result.added.append(p.id)
        elif old != _signature(p, old[-1]):
            result.updated.append(p.id)
        else:
            result.unchanged.append(p.id)
    if replace:
        result.removed = sorted(set(current) - incoming)
    _write(conn, people, result.removed, time.time())
    return result


def _write(
    conn: sqlite3.Connection, people: list[PersonRow], removed: list[str], now: float
) -> None:
    for pid in removed:
        conn.execute("DELETE FROM people WHERE id = ?", (pid,))
    for p in people:
        conn.execute("DELETE FROM credentials WHERE person_id = ?", (p.id,))
    access.ensure_groups(conn, {g for p in people for g in p.groups or ()})
    for p in people:
        conn.execute(
            "INSERT INTO people (id, name, type, valid_from, valid_until, blocked, notes, "
            "updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
            "name=excluded.name, type=excluded.type, valid_from=excluded.valid_from, "
            "valid_until=excluded.valid_until, blocked=excluded.blocked, notes=excluded.notes, "
            "updated_at=excluded.updated_at",
            (p.id, p.name, p.type, p.valid_from, p.valid_until, int(p.blocked), p.notes, now),
        )
        conn.executemany(
            "INSERT INTO credentials (kind, value, person_id) VALUES (?,?,?)",
            [(k, v, p.id) for k, v in p.credentials],
        )
        if p.groups is not None:
            conn.execute("DELETE FROM person_groups WHERE person_id = ?", (p.id,))
            conn.executemany(
                "INSERT INTO person_groups (person_id, group_id) VALUES (?,?)",
                [(p.id, g) for g in p.groups],
            )


def apply_document(
    conn: sqlite3.Connection, doc: Document, replace: bool, dry_run: bool = False
) -> dict[str, ImportResult]:
    """Apply every section present in one transaction; ``replace`` is per section present."""
    return _transaction(conn, dry_run, lambda: _apply_document(conn, doc, replace))


def _keyed(before: dict[Any, tuple[Any, ...]], rows: list[Any], replace: bool) -> ImportResult:
    result = ImportResult()
    for row in rows:
        old = before.get(row.key)
        bucket = result.added if old is None else result.updated
        if old is not None and old == row.signature():
            bucket = result.unchanged
        bucket.append(_label(row.key))
    if replace:
        result.removed = sorted(_label(k) for k in set(before) - {r.key for r in rows})
    return result


def _label(key: Any) -> str:
    if isinstance(key, str):
        return key
    if len(key) == 4:  # a holiday: (year, month, day, kind)
        year, month, day, kind = key
        return f"{f'{year}-' if year else ''}{month:02d}-{day:02d} {kind}"
    return "/".join(str(k) for k in key if k not in (None, ""))


def _apply_document(conn: sqlite3.Connection, doc: Document, replace: bool) -> dict[str, Any]:
    _check_references(conn, doc, replace)
    results: dict[str, ImportResult] = {}
    before = access.signatures(conn)
    for name in ("groups", "schedules", "holidays", "doors"):
        rows = getattr(doc, name)
        if rows is not None:
            results[name] = _keyed(before[name], rows, replace)
            getattr(access, f"write_{name}")(conn, rows, replace)
    if doc.people is not None:
        results["people"] = _apply_people(conn, doc.people, replace)
    if doc.permissions is not None:
        access.ensure_groups(conn, {p.group for p in doc.permissions})
        results["permissions"] = _keyed(before["permissions"], doc.permissions, replace)
        access.write_permissions(conn, doc.permissions, replace)
    return results


def _check_references(conn: sqlite3.Connection, doc: Document, replace: bool) -> None:
    """Permissions must name schedules that exist once the document is applied."""
    known = {s.id for s in doc.schedules or ()}
    if doc.schedules is None or not replace:
        known |= access.existing(conn, "schedules")
    problems = [
        f"line {p.line}: schedule {p.schedule!r} is not defined"
        for p in doc.permissions or ()
        if p.schedule is not None and p.schedule not in known
    ]
    if problems:
        raise ImportFileError(problems)


# ----- reading and removing -----------------------------------------------------------------


def _iso(ts: float | None, tz: ZoneInfo) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def _person_dicts(conn: sqlite3.Connection, tz: ZoneInfo, person_id: str | None = None) -> Any:
    creds: dict[str, dict[str, list[str]]] = {}
    groups: dict[str, list[str]] = {}
    columns = {kind: column for column, kind in CREDENTIAL_COLUMNS.items()}
    args: tuple[str, ...] = ()
    where = scoped = ""
    if person_id is not None:
        where, scoped, args = "WHERE id = ?", "WHERE person_id = ?", (person_id,)
    people = conn.execute(
        "SELECT id, name, type, valid_from, valid_until, blocked, notes FROM people "
        f"{where} ORDER BY id",
        args,
    ).fetchall()
    for kind, value, pid in conn.execute(
        f"SELECT kind, value, person_id FROM credentials {scoped} ORDER BY kind, value", args
    ):
        creds.setdefault(pid, {}).setdefault(columns.get(kind, kind), []).append(value)
    for pid, gid in conn.execute(
        f"SELECT person_id, group_id FROM person_groups {scoped} ORDER BY group_id", args
    ):
        groups.setdefault(pid, []).append(gid)
    for row in people:
        pid = row[0]
        out: dict[str, Any] = {
            "id": pid,
            "name": row[1],
            "type": row[2],
            "valid_from": _iso(row[3], tz),
            "valid_until": _iso(row[4], tz),
            "blocked": bool(row[5]),
            "notes": row[6],
        }
        for column in CREDENTIAL_COLUMNS:
            out[column] = creds.get(pid, {}).get(column, [])
        out["groups"] = groups.get(pid, [])
        yield out


def export(conn: sqlite3.Connection, tz: ZoneInfo) -> dict[str, Any]:
    """Everything importable, as a document ``edged people import`` reads back."""
    return {"people": list(_person_dicts(conn, tz)), **access.snapshot(conn)}


def export_csv(conn: sqlite3.Connection, tz: ZoneInfo, out: io.TextIOBase | Any) -> int:
    """Write people as CSV (lists joined by ``|``); returns how many."""
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS))
    writer.writeheader()
    count = 0
    for person in _person_dicts(conn, tz):
        row = {k: "|".join(v) if isinstance(v, list) else v for k, v in person.items()}
        row["blocked"] = "true" if person["blocked"] else "false"
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
        count += 1
    return count


def show(conn: sqlite3.Connection, person_id: str, tz: ZoneInfo) -> dict[str, Any] | None:
    """One person with credentials and groups, or None."""
    found = list(_person_dicts(conn, tz, person_id))
    return found[0] if found else None


def listing(
    conn: sqlite3.Connection, group: str | None = None, limit: int = 0, after: str = ""
) -> list[dict[str, Any]]:
    """People in id order (optionally of one group), without credentials."""
    sql = (
        "SELECT p.id, p.name, p.type, p.blocked, p.valid_from, p.valid_until, "
        "(SELECT group_concat(group_id, '|') FROM person_groups g WHERE g.person_id = p.id) "
        "FROM people p"
    )
    args: list[Any] = [after]
    where = " WHERE p.id > ?"
    if group:
        where += " AND p.id IN (SELECT person_id FROM person_groups WHERE group_id = ?)"
        args.append(group)
    sql += where + " ORDER BY p.id" + (" LIMIT ?" if limit else "")
    if limit:
        args.append(limit)
    keys = ("id", "name", "type", "blocked", "valid_from", "valid_until", "groups")
    out = []
    for row in conn.execute(sql, args):
        item = dict(zip(keys, row, strict=True))
        item["blocked"] = bool(item["blocked"])
        item["groups"] = sorted((item["groups"] or "").split("|")) if item["groups"] else []
        out.append(item)
    return out


def remove(conn: sqlite3.Connection, ids: list[str], dry_run: bool = False) -> list[str]:
    """Delete people (credentials and memberships with them); returns those that existed."""

    def work() -> list[str]:
        gone = []
        for pid in dict.fromkeys(ids):
            if conn.execute("DELETE FROM people WHERE id = ?", (pid,)).rowcount:
                gone.append(pid)
        return gone

    return _transaction(conn, dry_run, work)
