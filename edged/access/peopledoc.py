"""The people document: parse and validate an import (CSV people, or a JSON list or document).

Pure apart from reading the file: values in, validated rows or every problem at once out
(ImportFileError). Applying a document to the database is edged/access/people.py. File formats
are documented in docs/people.md; credential and group columns may hold several values separated
by ``|``. A person's face is a JPEG file named in column ``face`` (a path relative to the import
file) or, in JSON, the photo itself in ``face_base64``; it is read and checked here and kept by
edged/access/faces.py when the document is applied.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edged.access import faces, importfile
from edged.access import model as access
from edged.errors import ImportFileError

# column -> credential kind stored in the database
CREDENTIAL_COLUMNS = {
    "user_id": "user_id",
    "ic_number": "ic",
    "job_number": "job",
    "id_number": "id_number",
    "qr": "qr",
}
PERSON_COLUMNS = ("id", "name", "type", "valid_from", "valid_until", "blocked", "notes")
COLUMNS = (*PERSON_COLUMNS, *CREDENTIAL_COLUMNS, "groups", "face")
ACCEPTED = (*COLUMNS, "face_base64")  # the photo itself, JSON's other way to give a face
PERSON_TYPES = ("employee", "visitor", "contractor", "other")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # line breaks, tabs, NUL: never in a name or credential


@dataclass
class FaceInput:
    """A face given by an import: its digest and where its bytes are ("" digest: no face)."""

    digest: str
    data: bytes | None = None  # given in the document (face_base64)
    path: Path | None = None  # given as a file: read again when it is stored

    def read(self) -> bytes:
        """The photo's bytes, checked again if they come from a file (it may have changed)."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("no face")
        data = self.path.read_bytes()
        if faces.digest(data) != self.digest:
            raise ValueError(f"{self.path} changed while it was imported")
        return data


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
    face: FaceInput | None = None  # None: the face on file left as it is


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


def _face(raw: dict[str, Any], base: Path | None, problems: list[str]) -> FaceInput | None:
    """The face a row gives: None when it names none, an empty digest when it clears it."""
    if "face" not in raw and "face_base64" not in raw:
        return None
    named, sent = _as_text(raw.get("face")), _as_text(raw.get("face_base64"))
    if named and sent:
        problems.append("face, face_base64: give the photo one way, not both")
        return None
    if sent:
        try:
            data = base64.b64decode(sent, validate=True)
        except (binascii.Error, ValueError):
            problems.append("face_base64: not valid base64")
            return None
        return _checked(data, "face_base64", problems, FaceInput(faces.digest(data), data=data))
    if not named:
        return FaceInput("")
    if base is None:
        problems.append("face: a file is read only from an import file; send face_base64")
        return None
    path = base / named
    try:
        size = path.stat().st_size
        if size > faces.MAX_BYTES:
            problems.append(f"face: {named}: {size} bytes, more than the {faces.MAX_BYTES} allowed")
            return None
        data = path.read_bytes()
    except OSError as exc:
        problems.append(f"face: cannot read {named}: {exc.strerror or exc}")
        return None
    return _checked(data, f"face: {named}", problems, FaceInput(faces.digest(data), path=path))


def _checked(data: bytes, what: str, problems: list[str], face: FaceInput) -> FaceInput | None:
    problem = faces.check(data)
    if problem:
        problems.append(f"{what}: {problem}")
        return None
    return face


def _validate(
    raw: dict[str, Any], line: int, tz: ZoneInfo, base: Path | None = None
) -> tuple[PersonRow | None, list[str]]:
    problems: list[str] = []
    unknown = sorted(set(raw) - set(ACCEPTED))
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
    face = _face(raw, base, problems)
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
        face=face,
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


def load_file(path: Path, tz: ZoneInfo, fmt: str | None = None) -> Document:
    """Parse and validate a whole file (CSV people, or a JSON list or document)."""
    data, lines = importfile.read(path, fmt)
    return parse_document(data, tz, lines, base=path.parent)


def parse_records(
    records: list[tuple[int, dict[str, Any]]], tz: ZoneInfo, base: Path | None = None
) -> list[PersonRow]:
    """Validate parsed rows: every problem at once, including duplicates across rows.

    ``base`` is the folder of the import file, which face paths are relative to; without it
    (a document sent to the admin API or by the upstream) a face must come as ``face_base64``.
    """
    people: list[PersonRow] = []
    problems: list[str] = []
    ids: dict[str, int] = {}
    creds: dict[tuple[str, str], int] = {}
    for line, raw in records:
        person, errors = _validate(raw, line, tz, base)
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


def parse_document(
    data: Any, tz: ZoneInfo, lines: dict[str, list[int]] | None = None, base: Path | None = None
) -> Document:
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
            doc.people = parse_records(records, tz, base)
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
