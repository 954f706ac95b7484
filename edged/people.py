"""The local people cache: lookups for decisions, and all-or-nothing imports.

File format (CSV with a header row, or JSON: a list of objects, or ``{"people": [...]}``) is
documented in docs/people.md. Credential columns may hold several values separated by ``|``.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edged.errors import ImportFileError
from edged.model import Event
from edged.policy import Person

# column -> credential kind stored in the database
CREDENTIAL_COLUMNS = {
    "user_id": "user_id",
    "ic_number": "ic",
    "job_number": "job",
    "id_number": "id_number",
    "qr": "qr",
}
PERSON_COLUMNS = ("id", "name", "type", "valid_from", "valid_until", "blocked", "notes")
COLUMNS = PERSON_COLUMNS + tuple(CREDENTIAL_COLUMNS)
PERSON_TYPES = ("employee", "visitor", "contractor", "other")


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


def _lookup_keys(event: Event) -> list[tuple[str, str]]:
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


_FIND = (
    "SELECT p.id, p.name, p.blocked, p.valid_from, p.valid_until FROM credentials c "
    "JOIN people p ON p.id = c.person_id WHERE c.kind = ? AND c.value = ?"
)


def find_person(conn: sqlite3.Connection, event: Event) -> Person | None:
    """The cached person matching the event's credentials, strongest first."""
    for kind, value in _lookup_keys(event):
        row = conn.execute(_FIND, (kind, value)).fetchone()
        if row is not None:
            return Person(
                id=row[0],
                name=row[1],
                blocked=bool(row[2]),
                valid_from=row[3],
                valid_until=row[4],
            )
    return None


# ----- parsing ------------------------------------------------------------------------------


def _parse_time(value: str, tz: ZoneInfo, end: bool) -> float:
    """ISO date or date-time, naive ones in the site's zone; an end date is inclusive."""
    text = value.strip()
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
    kind = _as_text(raw.get("type")) or "employee"
    if kind not in PERSON_TYPES:
        problems.append(f"type: {kind!r} is not one of {', '.join(PERSON_TYPES)}")
    times: dict[str, float | None] = {}
    for column in ("valid_from", "valid_until"):
        text = _as_text(raw.get(column))
        times[column] = None
        if text:
            try:
                times[column] = _parse_time(text, tz, end=column == "valid_until")
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
            if text:
                credentials.append((cred_kind, text))
    if pid and not any(k == "user_id" for k, _ in credentials):
        credentials.append(("user_id", pid))
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
    )
    return person, []


def _records(text: str, fmt: str) -> list[tuple[int, dict[str, Any]]]:
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFileError([f"line {exc.lineno}: not valid JSON: {exc.msg}"]) from None
        if isinstance(data, dict):
            data = data.get("people")
        if not isinstance(data, list):
            raise ImportFileError(['line 1: expected a list of people or {"people": [...]}'])
        out = []
        for index, item in enumerate(data, start=1):
            if not isinstance(item, dict):
                raise ImportFileError([f"item {index}: expected an object"])
            out.append((index, item))
        return out
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ImportFileError(["line 1: empty file (expected a header row)"])
    rows = []
    for row in reader:
        extra = row.pop(None, None)  # type: ignore[call-overload]
        if extra:
            raise ImportFileError([f"line {reader.line_num}: more values than header columns"])
        rows.append((reader.line_num, {k.strip(): v for k, v in row.items() if k}))
    return rows


def parse_file(path: Path, tz: ZoneInfo, fmt: str | None = None) -> list[PersonRow]:
    """Parse and validate a whole file; raise ImportFileError listing every bad row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError([f"{path}: cannot read: {exc}"]) from None
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "csv")
    return parse_records(_records(text, fmt), tz)


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
                    f"line {line}: {cred[0]} {_mask(cred[1])} already on line {creds[cred]}"
                )
            creds[cred] = line
        people.append(person)
    if problems:
        raise ImportFileError(problems)
    return people


def _mask(value: str) -> str:
    """Credentials are never printed in full: at most the last 4 characters, half at most."""
    keep = min(4, len(value) // 2)
    return "*" * (len(value) - keep) + value[len(value) - keep :]


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
    return {r[0]: (*tuple(r)[1:], sorted(creds.get(r[0], []))) for r in rows}


def _signature(p: PersonRow) -> tuple[Any, ...]:
    return (
        p.name,
        p.type,
        p.valid_from,
        p.valid_until,
        int(p.blocked),
        p.notes,
        sorted(p.credentials),
    )


def apply(
    conn: sqlite3.Connection, people: list[PersonRow], replace: bool, dry_run: bool = False
) -> ImportResult:
    """Upsert people in one transaction (``replace``: remove everyone else); all or nothing."""
    result = ImportResult()
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _current(conn)
        incoming = {p.id for p in people}
        owners = {
            (k, v): pid
            for k, v, pid in conn.execute("SELECT kind, value, person_id FROM credentials")
        }
        problems = []
        for p in people:
            for cred in p.credentials:
                owner = owners.get(cred)
                if owner and owner != p.id and owner not in incoming and not replace:
                    problems.append(
                        f"line {p.line}: {cred[0]} {_mask(cred[1])} belongs to person {owner!r}"
                    )
        if problems:
            raise ImportFileError(problems)
        for p in people:
            old = current.get(p.id)
            if old is None:
                result.added.append(p.id)
            elif old != _signature(p):
                result.updated.append(p.id)
            else:
                result.unchanged.append(p.id)
        if replace:
            result.removed = sorted(set(current) - incoming)
        if not dry_run:
            _write(conn, people, result.removed, now)
        conn.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _write(
    conn: sqlite3.Connection, people: list[PersonRow], removed: list[str], now: float
) -> None:
    for pid in removed:
        conn.execute("DELETE FROM people WHERE id = ?", (pid,))
    for p in people:
        conn.execute("DELETE FROM credentials WHERE person_id = ?", (p.id,))
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
