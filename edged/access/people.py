"""The local people cache: all-or-nothing imports, export, listing and removal.

A document is parsed and validated by edged/access/peopledoc.py (whose names this module also
offers, so one import serves a caller that parses and applies); this module applies it to the
database and reads it back. Faces: the photos are files (edged/access/faces.py), written before
the transaction that names them; after it, files no row names any more are removed, and the
ones a failed or dry-run import wrote are removed again.
"""

from __future__ import annotations

import base64
import csv
import io
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from edged.access import doorpeople, peopledoc, terminalstate
from edged.access import model as access
from edged.access.faces import FaceStore
from edged.access.peopledoc import COLUMNS, CREDENTIAL_COLUMNS, Document, PersonRow, mask
from edged.errors import ImportFileError, StoreError

T = TypeVar("T")

# The parse face, offered here too: a caller that parses and applies needs one import.
load_file = peopledoc.load_file
parse_document = peopledoc.parse_document
parse_records = peopledoc.parse_records
warnings = peopledoc.warnings


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
        "SELECT id, name, type, valid_from, valid_until, blocked, notes, face FROM people"
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


def _signature(p: PersonRow, old_groups: list[str], old_face: str | None) -> tuple[Any, ...]:
    groups = old_groups if p.groups is None else sorted(p.groups)
    face = old_face if p.face is None else p.face.digest or None
    return (
        p.name,
        p.type,
        p.valid_from,
        p.valid_until,
        int(p.blocked),
        p.notes,
        face,
        sorted(p.credentials),
        groups,
    )


def _transaction(conn: sqlite3.Connection, dry_run: bool, work: Callable[[], T]) -> T:
    """Run ``work`` in one write transaction; a dry run is rolled back, an error too."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        if not dry_run:
            doorpeople.bump(conn)  # the people sync notices the change (access/doorpeople.py)
        conn.execute("ROLLBACK" if dry_run else "COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.IntegrityError):
            raise ImportFileError([f"the database refused the change: {exc}"]) from None
        raise
    return result


def apply(
    conn: sqlite3.Connection,
    people: list[PersonRow],
    replace: bool,
    dry_run: bool = False,
    faces: FaceStore | None = None,
) -> ImportResult:
    """Upsert people in one transaction (``replace``: remove everyone else); all or nothing."""
    return _with_faces(conn, people, faces, dry_run, lambda: _apply_people(conn, people, replace))


def face_names(conn: sqlite3.Connection) -> set[str]:
    """The faces some person's row names."""
    return {r[0] for r in conn.execute("SELECT DISTINCT face FROM people WHERE face IS NOT NULL")}


def _with_faces(
    conn: sqlite3.Connection,
    people: list[PersonRow],
    faces: FaceStore | None,
    dry_run: bool,
    work: Callable[[], T],
) -> T:
    """Keep the people's new faces, run ``work`` in a transaction, then tidy the face files.

    Files a failed or dry-run import wrote and no row names are removed again; after a commit,
    so are the files the change left without a row.
    """
    given = [p for p in people if p.face is not None and p.face.digest]
    if given and faces is None:
        raise ImportFileError([f"line {given[0].line}: faces are not accepted here"])
    written: list[str] = []
    if faces is not None and not dry_run:
        written = _keep_faces(faces, given)
    before: set[str] = set()

    def run() -> T:
        before.update(face_names(conn))
        return work()

    try:
        result = _transaction(conn, dry_run, run)
    except BaseException:
        if faces is not None and written:
            faces.discard(set(written) - face_names(conn))
        raise
    if faces is not None:
        gone = (before | set(written)) - face_names(conn) if not dry_run else set()
        faces.discard(gone)
    return result


def _keep_faces(faces: FaceStore, given: list[PersonRow]) -> list[str]:
    """Write each new face file; those new to the folder are returned (to undo on failure)."""
    written: list[str] = []
    try:
        for p in given:
            assert p.face is not None
            if faces.has(p.face.digest):
                continue
            try:
                name, new = faces.put(p.face.read())
            except (OSError, ValueError) as exc:
                raise ImportFileError([f"line {p.line}: face: {exc}"]) from None
            if new:
                written.append(name)
    except BaseException:
        faces.discard(written)
        raise
    return written


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
        elif old != _signature(p, old[-1], old[6]):
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
        if p.face is not None:
            conn.execute("UPDATE people SET face = ? WHERE id = ?", (p.face.digest or None, p.id))
        if p.groups is not None:
            conn.execute("DELETE FROM person_groups WHERE person_id = ?", (p.id,))
            conn.executemany(
                "INSERT INTO person_groups (person_id, group_id) VALUES (?,?)",
                [(p.id, g) for g in p.groups],
            )


def apply_document(
    conn: sqlite3.Connection,
    doc: Document,
    replace: bool,
    dry_run: bool = False,
    faces: FaceStore | None = None,
) -> dict[str, ImportResult]:
    """Apply every section present in one transaction; ``replace`` is per section present.

    ``faces`` keeps the people's photos; without it a document that gives a face is refused.
    """
    return _with_faces(
        conn, doc.people or [], faces, dry_run, lambda: _apply_document(conn, doc, replace)
    )


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
        "SELECT id, name, type, valid_from, valid_until, blocked, notes, face FROM people "
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
        out["face"] = row[7]
        yield out


def _face_file(faces: FaceStore, person: dict[str, Any]) -> Any:
    name = person["face"]
    if name is not None and not faces.has(name):
        raise StoreError(f"person {person['id']!r}: face file {faces.path(name)} is missing")
    return None if name is None else faces.path(name)


def export(
    conn: sqlite3.Connection, tz: ZoneInfo, faces: FaceStore | None = None
) -> dict[str, Any]:
    """Everything importable, as a document ``edged people import`` reads back.

    With ``faces`` each person carries ``face_base64`` (null: no face), so a re-import gives back
    the same photos; without it faces are left out, and a re-import leaves them as they are.
    """
    listed = []
    for person in _person_dicts(conn, tz):
        if faces is not None:
            path = _face_file(faces, person)
            person["face_base64"] = (
                None if path is None else base64.b64encode(path.read_bytes()).decode("ascii")
            )
        del person["face"]
        listed.append(person)
    return {"people": listed, **access.export_tables(conn)}


def export_csv(
    conn: sqlite3.Connection, tz: ZoneInfo, out: io.TextIOBase | Any, faces: FaceStore | None = None
) -> int:
    """Write people as CSV (lists joined by ``|``); returns how many.

    With ``faces`` column ``face`` names each face file where the gateway keeps it (an absolute
    path, which an import on this gateway reads back); without it the column is left out.
    """
    columns = [c for c in COLUMNS if c != "face" or faces is not None]
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    count = 0
    for person in _person_dicts(conn, tz):
        if faces is not None:
            person["face"] = _face_file(faces, person)
        else:
            del person["face"]
        row = {k: "|".join(v) if isinstance(v, list) else v for k, v in person.items()}
        row["blocked"] = "true" if person["blocked"] else "false"
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
        count += 1
    return count


def show(
    conn: sqlite3.Connection, person_id: str, tz: ZoneInfo, faces: FaceStore | None = None
) -> dict[str, Any] | None:
    """One person with credentials and groups, or None.

    ``face`` says what is on file; ``terminals`` where the person is on the terminals (one entry
    per terminal the people sync wrote them to, or tried to: its state and refusal).
    """
    found = list(_person_dicts(conn, tz, person_id))
    if not found:
        return None
    person = found[0]
    name = person["face"]
    if name is not None:
        size = faces.size(name) if faces is not None else None
        person["face"] = {"sha256": name, "bytes": size, "on_file": size is not None}
    person["terminals"] = terminalstate.of_person(conn, person_id)
    return person


def listing(
    conn: sqlite3.Connection, group: str | None = None, limit: int = 0, after: str = ""
) -> list[dict[str, Any]]:
    """People in id order (optionally of one group), without credentials."""
    sql = (
        "SELECT p.id, p.name, p.type, p.blocked, p.valid_from, p.valid_until, "
        "(SELECT group_concat(group_id, '|') FROM person_groups g WHERE g.person_id = p.id), "
        "p.face IS NOT NULL FROM people p"
    )
    args: list[Any] = [after]
    where = " WHERE p.id > ?"
    if group:
        where += " AND p.id IN (SELECT person_id FROM person_groups WHERE group_id = ?)"
        args.append(group)
    sql += where + " ORDER BY p.id" + (" LIMIT ?" if limit else "")
    if limit:
        args.append(limit)
    keys = ("id", "name", "type", "blocked", "valid_from", "valid_until", "groups", "face")
    out = []
    for row in conn.execute(sql, args):
        item = dict(zip(keys, row, strict=True))
        item["blocked"] = bool(item["blocked"])
        item["face"] = bool(item["face"])
        item["groups"] = sorted((item["groups"] or "").split("|")) if item["groups"] else []
        out.append(item)
    return out


def remove(
    conn: sqlite3.Connection, ids: list[str], dry_run: bool = False, faces: FaceStore | None = None
) -> list[str]:
    """Delete people (credentials, memberships and faces with them); returns those that existed."""

    def work() -> list[str]:
        gone = []
        for pid in dict.fromkeys(ids):
            if conn.execute("DELETE FROM people WHERE id = ?", (pid,)).rowcount:
                gone.append(pid)
        return gone

    return _with_faces(conn, [], faces, dry_run, work)


def search(conn: sqlite3.Connection, text: str, limit: int = 50) -> list[dict[str, Any]]:
    """People whose id or name contains ``text`` (case-insensitive for ASCII), in id order,
    as :func:`listing` shows them (the web page's people search)."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    ids = [
        row[0]
        for row in conn.execute(
            "SELECT id FROM people WHERE id LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\' "
            "ORDER BY id LIMIT ?",
            (pattern, pattern, limit),
        )
    ]
    return _listed(conn, ids)


def _listed(conn: sqlite3.Connection, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        "SELECT p.id, p.name, p.type, p.blocked, "
        "(SELECT group_concat(group_id, '|') FROM person_groups g WHERE g.person_id = p.id) "
        f"FROM people p WHERE p.id IN ({marks}) ORDER BY p.id",
        ids,
    )
    out = []
    for pid, name, kind, blocked, groups in rows:
        out.append(
            {
                "id": pid,
                "name": name,
                "type": kind,
                "blocked": bool(blocked),
                "groups": sorted(groups.split("|")) if groups else [],
            }
        )
    return out
