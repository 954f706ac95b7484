"""``edged people import|export|list|show|remove``: the local people cache."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edged.cli import common
from edged.errors import NotFoundError, OutputError


def cmd_people_import(args: argparse.Namespace) -> int:
    """Import people (and groups, schedules, doors, …) from CSV or JSON, all or nothing."""
    from edged.access import model as access
    from edged.access import people
    from edged.errors import ImportFileError

    cfg = common.load(args)
    doc = people.load_file(Path(args.file), ZoneInfo(cfg.site.timezone), args.format)
    _, conn = common.database(args)
    try:
        doubts = people.warnings(doc, access.door_names(cfg), access.existing(conn, "groups"))
        if doubts and args.strict:
            raise ImportFileError([*doubts, "--strict: nothing was imported"])
        for doubt in doubts:
            print(f"edged: warning: {doubt}", file=sys.stderr)
        results = people.apply_document(
            conn, doc, replace=args.replace, dry_run=args.dry_run, faces=common.faces(cfg)
        )
    finally:
        conn.close()
    verb = "would" if args.dry_run else "did"
    for section, result in results.items():
        read = len(getattr(doc, section) or ())
        print(
            f"{section}: {read} read; {verb} add {len(result.added)}, update "
            f"{len(result.updated)}, remove {len(result.removed)}, keep {len(result.unchanged)}"
        )
        if args.dry_run:
            for label, ids in (("+", result.added), ("~", result.updated), ("-", result.removed)):
                for key in ids:
                    print(f"  {label} {key}")
    return 0


def cmd_people_export(args: argparse.Namespace) -> int:
    """Write everything importable as JSON (or people only as CSV)."""
    from edged.access import people

    cfg, conn = common.database(args)
    tz = ZoneInfo(cfg.site.timezone)
    try:
        with contextlib.ExitStack() as stack:
            out = sys.stdout
            if args.output and args.output != "-":
                out = stack.enter_context(_open_output(args.output))
            faces = common.faces(cfg)
            if args.format == "csv":
                people.export_csv(conn, tz, out, faces)
            else:
                json.dump(people.export(conn, tz, faces), out, indent=1, ensure_ascii=False)
                out.write("\n")
    finally:
        conn.close()
    return 0


def _open_output(path: str) -> Any:
    """A text file to write, or an OutputError saying why it cannot be."""
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror or exc}") from None


def cmd_people_list(args: argparse.Namespace) -> int:
    """List people (id, name, type, groups), optionally of one group."""
    from edged.access import people

    _, conn = common.database(args)
    try:
        rows = people.listing(conn, group=args.group)
    finally:
        conn.close()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if not rows:
        print("no people" + (f" in group {args.group}" if args.group else ""), file=sys.stderr)
        return 0
    print(f"{'ID':<20} {'NAME':<28} {'TYPE':<10} GROUPS")
    for row in rows:
        flags = " BLOCKED" if row["blocked"] else ""
        groups = ",".join(row["groups"]) or "-"
        print(f"{row['id']:<20} {row['name']:<28} {row['type']:<10} {groups}{flags}")
    return 0


def cmd_people_show(args: argparse.Namespace) -> int:
    """Show one person: validity, groups, credentials (masked)."""
    from edged.access import people

    cfg, conn = common.database(args)
    try:
        person = people.show(conn, args.id, ZoneInfo(cfg.site.timezone), common.faces(cfg))
    finally:
        conn.close()
    if person is None:
        raise NotFoundError(f"no person {args.id!r}")
    for column in people.CREDENTIAL_COLUMNS:
        if column != "user_id":
            person[column] = [people.mask(v) for v in person[column]]
    if args.json:
        print(json.dumps(person, ensure_ascii=False))
        return 0
    person["face"] = face_text(person["face"])
    person["terminals"] = terminals_text(person["terminals"])
    for key, value in person.items():
        print(f"{key:<12} {common.text(value)}")
    return 0


def cmd_people_remove(args: argparse.Namespace) -> int:
    """Remove people by id, with their credentials and memberships."""
    from edged.access import people

    cfg, conn = common.database(args)
    try:
        gone = people.remove(conn, args.ids, dry_run=args.dry_run, faces=common.faces(cfg))
    finally:
        conn.close()
    missing = [pid for pid in args.ids if pid not in gone]
    print(f"{'would remove' if args.dry_run else 'removed'} {len(gone)}: {' '.join(gone)}")
    if missing:
        raise NotFoundError(f"no such person: {' '.join(missing)}")
    return 0


def face_text(face: dict[str, Any] | None) -> str:
    """What ``people show`` says of a face: none, on file (size, digest), or its file missing."""
    if face is None:
        return "none"
    if not face["on_file"]:
        return f"MISSING (sha256 {face['sha256'][:12]}…, its file is gone)"
    return f"on file ({face['bytes']} bytes, sha256 {face['sha256'][:12]}…)"


def terminals_text(entries: list[dict[str, Any]]) -> str:
    """Where ``people show`` says the person is on the terminals: each one's state."""
    if not entries:
        return "not on any terminal"
    return "; ".join(
        f"{e['serial']} user {e['user_id']}: "
        + ("in step" if e["state"] == "in_step" else f"REFUSED ({e['error']})")
        for e in entries
    )
