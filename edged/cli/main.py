"""The ``edged`` command: a thin layer over the daemon, the store and the admin API.

Expected failures print one line each and exit with a meaningful code (78 for configuration
errors); only an unexpected error shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from edged import __version__, config, logs
from edged.cli import terminals as terminal_cli
from edged.errors import (
    AdminError,
    DaemonDownError,
    DoorError,
    EdgedError,
    ModeError,
    NotFoundError,
    OutputError,
    UsageError,
)
from edged.terminals import client as terminals

Command = Callable[[argparse.Namespace], int]


def _load(args: argparse.Namespace) -> config.Config:
    return config.load(getattr(args, "config", None))


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from edged.ops import wiring

    cfg = _load(args)
    logs.setup(args.log_level or cfg.logging.level, cfg.logging.format)
    asyncio.run(wiring.run(cfg))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration; print it (secrets masked) with --print."""
    cfg = _load(args)
    if args.print:
        sys.stdout.write(config.to_toml(config.to_dict(cfg)))
    else:
        print(f"{cfg.source}: OK")
    return 0


def _admin_url(cfg: config.Config, path: str) -> str:
    host, _, port = cfg.admin.listen[0].rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"http://{host}:{port}{path}"


def _unreachable(url: str, exc: Exception) -> DaemonDownError:
    """The one line for an admin API that does not answer (no ``[Errno 111]`` noise)."""
    reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
    return DaemonDownError(f"cannot reach edged at {url}: {reason} (is it running?)")


def admin_get(cfg: config.Config, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET from the running daemon's admin API."""
    import httpx

    url = _admin_url(cfg, path)
    try:
        response = httpx.get(url, params=params, timeout=10.0)
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from None
    if response.status_code >= 400 and response.status_code != 503:
        raise AdminError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    return response.json()


def admin_post(
    cfg: config.Config,
    path: str,
    body: dict[str, Any] | None = None,
    refused: type[EdgedError] = AdminError,
) -> Any:
    """POST to the running daemon's admin API with the admin token (``refused``: 422's error)."""
    import httpx

    token = config.admin_token(cfg)
    if not token:
        raise AdminError("no admin token is configured (admin.token_file or admin.token)")
    url = _admin_url(cfg, path)
    headers = {"authorization": f"Bearer {token}"}
    try:
        response = httpx.post(url, json=body or {}, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("msg") or response.text[:200]
        except (ValueError, AttributeError):
            message = response.text[:200]
        if response.status_code == 422:
            raise refused(message)
        error = DoorError if response.status_code == 404 and "/doors/" in path else AdminError
        raise error(f"{url}: HTTP {response.status_code}: {message}")
    return response.json()


def _text(value: Any, none: str = "-") -> str:
    """A value as an operator reads it: no ``None``, ``True`` or list reprs."""
    if value is None or value == "" or value == [] or value == {}:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | dict):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _utc(ts: float | None) -> str:
    """Epoch seconds as ``2026-11-28 08:02:11 UTC`` (``-`` for none)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


DOOR_COLUMNS = ("door", "lock", "contact", "alarms", "last decision")


def _door_row(door: dict[str, Any]) -> str:
    if door.get("locked") is None:
        lock = "-"
    else:
        lock = "locked" if door["locked"] else f"UNLOCKED ({_text(door.get('why'), 'unknown')})"
    alarms = ",".join(a["kind"] for a in door.get("alarms") or []) or "no alarms"
    last = door.get("last_decision")
    decision = "no decision yet"
    if last:
        reason = f" ({last['reason']})" if last.get("reason") else ""
        decision = f"last {_text(last.get('decision'))}{reason}"
    holds = f" holds={','.join(door['holds'])}" if door.get("holds") else ""
    contact = _text(door.get("contact"), "no contact" if door.get("locked") is not None else "-")
    return f"{door['name']:<16} {lock:<24} {contact:<10} {alarms:<20} {decision}{holds}"


def _door_header() -> str:
    door, lock, contact, alarms, last = (c.upper() for c in DOOR_COLUMNS)
    return f"{door:<16} {lock:<24} {contact:<10} {alarms:<20} {last}"


def _door_line(door: dict[str, Any]) -> str:
    return f"  {_door_row(door)}"


def cmd_door(args: argparse.Namespace) -> int:
    """Open (timed), hold, release or lock a door through the running daemon."""
    cfg = _load(args)
    doors = [d.name for d in cfg.doors]
    if doors and args.door not in doors:  # without doors here, the daemon's 404 tells
        from edged.access import model as access

        raise DoorError(access.unknown("door", args.door, doors))
    source = args.source or f"cli:{getpass.getuser()}"
    answer = admin_post(cfg, f"/api/v1/doors/{args.door}/{args.action}", {"source": source})
    print(_door_header())
    print(_door_row(answer["door"]))
    return 0


def _malformed_line(malformed: dict[str, Any]) -> str:
    """The alarm line for stored malformed records: how many, and the newest."""
    last = malformed.get("last") or {}
    who = last.get("terminal") or last.get("serial") or "?"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.get("received_at") or 0))
    return (
        f"  ALARM      {malformed['count']} malformed records stored; newest #{last.get('id')} "
        f"from {who} at {when}: {last.get('reason')}"
    )


def _status_online(cfg: config.Config) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """Readiness, doors and terminals as the running daemon reports them."""
    ready = admin_get(cfg, "/readyz")
    site = admin_get(cfg, "/api/v1/doors")
    listing = admin_get(cfg, "/api/v1/terminals").get("terminals", [])
    return ready, site, listing


def _status_offline(cfg: config.Config) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """What the state database (read-only) tells while the daemon is not running."""
    from edged.errors import StoreError
    from edged.store import readonly

    modes: dict[str, bool] = {}
    decided: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    try:
        conn = readonly.connect(cfg.storage.database_path)
        try:
            modes = readonly.site_modes(conn)
            decided = readonly.last_decisions(conn, [d.name for d in cfg.doors])
            seen = readonly.terminals_seen(conn)
        finally:
            conn.close()
    except StoreError as exc:  # the daemon's state is what is asked for: still exit 69
        print(f"edged: {exc}", file=sys.stderr)
    doors = [
        {"name": d.name, "locked": None, "last_decision": decided.get(d.name)} for d in cfg.doors
    ]
    listing = []
    for t in cfg.terminals:
        known = seen.get(t.serial, {})
        listing.append(
            {
                "name": t.name,
                "serial": t.serial,
                "address": known.get("address"),
                "last_push": known.get("last_push"),
                "last_heartbeat": known.get("last_heartbeat"),
            }
        )
    ready = {"ready": False, "running": False, "checks": {}}
    return ready, {"doors": doors, **modes}, listing


def _readiness_lines(cfg: config.Config, ready: dict[str, Any]) -> list[str]:
    if ready.get("running") is False:
        return [
            f"{cfg.site.name}: NOT RUNNING (the admin API does not answer); stored state from "
            f"{cfg.storage.database_path}, read-only"
        ]
    lines = [f"{cfg.site.name}: {'ready' if ready.get('ready') else 'NOT READY'}"]
    for name, check in ready.get("checks", {}).items():
        if "ok" in check:
            state = "ALARM" if check.get("alarm") else "ok" if check["ok"] else "FAILING"
            lines.append(f"  {name:<10} {state}{_alarm_detail(check)}")
    malformed = ready.get("checks", {}).get("receiver", {}).get("malformed") or {}
    if malformed.get("count"):
        lines.append(_malformed_line(malformed))
    return lines


def _doors_lines(site: dict[str, Any]) -> list[str]:
    flags = [f for f in ("fire", "lockdown", "free_access", "siren") if site.get(f)]
    lines = [
        f"doors{': ' + ', '.join(f.upper().replace('_', ' ') for f in flags) if flags else ''}"
    ]
    doors = site.get("doors", [])
    if not doors:
        return [*lines, "  (none configured)"]
    return [*lines, f"  {_door_header()}", *(_door_line(d) for d in doors)]


def status_lines(
    cfg: config.Config, ready: dict[str, Any], site: dict[str, Any], listing: list[Any]
) -> list[str]:
    """``edged status`` as text: one section after the other (add a section here)."""
    return [
        *_readiness_lines(cfg, ready),
        *_doors_lines(site),
        *terminals.status_section(listing),
    ]


def cmd_status(args: argparse.Namespace) -> int:
    """Print readiness, every door's state and every terminal's health."""
    cfg = _load(args)
    try:
        ready, site, listing = _status_online(cfg)
        code = 0 if ready.get("ready") else 1
    except DaemonDownError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        ready, site, listing = _status_offline(cfg)
        code = DaemonDownError.exit_code
    if args.json:
        print(json.dumps({"ready": ready, "doors": site, "terminals": listing}))
    else:
        print("\n".join(status_lines(cfg, ready, site, listing)))
    return code


EVENT_COLUMNS = ("id", "received (UTC)", "terminal", "person", "what")
DEFAULT_EVENTS = 20  # a bare `edged events`: the newest page
FOLLOW_INTERVAL = 1.0  # seconds between two reads of the database while following


def _event_header() -> str:
    ident, received, where, who, what = (c.upper() for c in EVENT_COLUMNS)
    return f"{ident:>8} {received:<24} {where:<16} {who:<20} {what}"


def _alarm_detail(check: dict[str, Any]) -> str:
    """What a raised alarm is about, for ``edged status`` (e.g. forged terminal requests)."""
    latest = check.get("latest") if check.get("alarm") else None
    if not latest:
        return ""
    return (
        f": {check.get('refused_24h')} forged requests in 24 h, latest {latest['at']} from "
        f"{latest['source']} claiming {latest['terminal'] or latest['serial']}"
    )


def _event_line(event: dict[str, Any]) -> str:
    who = event.get("user_name") or event.get("person_id") or event.get("user_id") or "-"
    what = event["kind"]
    if event.get("decision"):
        reason = f" ({event['reason']})" if event.get("reason") else ""
        what = f"{what} {event['decision']}{reason}"
    elif event["kind"] == "alarm":
        code, status = _text(event.get("alarm_code")), _text(event.get("alarm_status"))
        what = f"alarm code={code} status={status}"
    if str(event.get("door_outcome") or "").startswith("refused"):
        what += f", door {event['door_outcome']}"  # granted, door refused: lockdown
    flags = " replayed" if event.get("replayed") else ""
    if event.get("duplicates"):
        flags += f" dup x{event['duplicates']}"
    where = event.get("terminal") or event["serial"]
    return f"{event['id']:>8} {event['received_at']:<24} {where:<16} {who:<20} {what}{flags}"


def _since(text: str) -> float:
    """``--since``: epoch seconds or an ISO date or date-time (UTC unless it has an offset)."""
    from edged.admin.app import parse_since

    try:
        value = parse_since(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date-time (2026-11-28T08:00, UTC unless it has an offset) "
            "or epoch seconds"
        )
    return value


def _count(text: str) -> int:
    """A count option: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


class _EventPrinter:
    """Prints events as text (a header first) or as JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.printed = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(event), flush=True)
        else:
            if not self.printed:
                print(_event_header())
            print(_event_line(event), flush=True)
        self.printed += 1


def _first_events(conn: Any, query: Any, args: argparse.Namespace) -> tuple[list[Any], bool]:
    """The events asked for before any following, and whether more matched than shown."""
    from edged.store import readonly

    if args.tail:
        return list(readonly.events(conn, query, args.tail, newest_first=True)), False
    if args.limit:
        found = list(readonly.events(conn, query, args.limit + 1))
        return found[: args.limit], len(found) > args.limit
    found = readonly.recent(conn, query, DEFAULT_EVENTS + 1)
    return found[-DEFAULT_EVENTS:], len(found) > DEFAULT_EVENTS


def cmd_events(args: argparse.Namespace) -> int:
    """Print stored events from the database (read-only); --follow keeps printing new ones."""
    from edged.store import readonly

    if args.tail and args.follow:
        raise UsageError(
            "events: --tail prints newest first and --follow in arrival order: pick one"
        )
    cfg = _load(args)
    query = readonly.EventQuery(args.since, args.terminal, args.person, args.decision)
    conn = readonly.connect(cfg.storage.database_path)
    try:
        shown, more = _first_events(conn, query, args)
        newest = readonly.last_id(conn)
    finally:
        conn.close()
    show = _EventPrinter(args.json)
    for event in shown:
        show(event)
    if more:
        limit = args.limit or DEFAULT_EVENTS
        print(
            f"edged: more events match than the {limit} shown: --limit N, --tail N or --since",
            file=sys.stderr,
        )
    if not shown and not args.json and not args.follow:
        print("no events match", file=sys.stderr)
    if args.follow:
        _follow(cfg.storage.database_path, query, newest, show)
    return 0


def _follow(path: Path, query: Any, after: int, show: Callable[[dict[str, Any]], None]) -> None:
    """Print every matching event stored after id ``after``, until interrupted.

    The database is opened anew for every read, so following goes on across a restart of the
    daemon (or a stop: nothing new is printed until it runs again).
    """
    from edged.errors import StoreError
    from edged.store import readonly

    trouble = ""
    while True:
        try:
            conn = readonly.connect(path)
            try:
                page = list(readonly.events(conn, query, 1000, after=after))
            finally:
                conn.close()
        except StoreError as exc:
            if str(exc) != trouble:
                trouble = str(exc)
                print(f"edged: {trouble}; trying again", file=sys.stderr, flush=True)
            time.sleep(FOLLOW_INTERVAL)
            continue
        if trouble:
            trouble = ""
            print("edged: reading the database again", file=sys.stderr, flush=True)
        for event in page:
            show(event)
            after = event["id"]
        if len(page) < 1000:
            time.sleep(FOLLOW_INTERVAL)


def _database(args: argparse.Namespace) -> tuple[config.Config, Any]:
    """The configuration and an open (migrated) connection to the state database."""
    from edged.store import events as store

    cfg = _load(args)
    return cfg, store.open_database(cfg.storage.database_path).conn


def cmd_people_import(args: argparse.Namespace) -> int:
    """Import people (and groups, schedules, doors, …) from CSV or JSON, all or nothing."""
    from edged.access import model as access
    from edged.access import people
    from edged.errors import ImportFileError

    cfg = _load(args)
    doc = people.load_file(Path(args.file), ZoneInfo(cfg.site.timezone), args.format)
    _, conn = _database(args)
    try:
        doubts = people.warnings(doc, access.door_names(cfg), access.existing(conn, "groups"))
        if doubts and args.strict:
            raise ImportFileError([*doubts, "--strict: nothing was imported"])
        for doubt in doubts:
            print(f"edged: warning: {doubt}", file=sys.stderr)
        results = people.apply_document(conn, doc, replace=args.replace, dry_run=args.dry_run)
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

    cfg, conn = _database(args)
    tz = ZoneInfo(cfg.site.timezone)
    try:
        with contextlib.ExitStack() as stack:
            out = sys.stdout
            if args.output and args.output != "-":
                out = stack.enter_context(_open_output(args.output))
            if args.format == "csv":
                people.export_csv(conn, tz, out)
            else:
                json.dump(people.export(conn, tz), out, indent=1, ensure_ascii=False)
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

    _, conn = _database(args)
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

    cfg, conn = _database(args)
    try:
        person = people.show(conn, args.id, ZoneInfo(cfg.site.timezone))
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
    for key, value in person.items():
        print(f"{key:<12} {_text(value)}")
    return 0


def cmd_people_remove(args: argparse.Namespace) -> int:
    """Remove people by id, with their credentials and memberships."""
    from edged.access import people

    _, conn = _database(args)
    try:
        gone = people.remove(conn, args.ids, dry_run=args.dry_run)
    finally:
        conn.close()
    missing = [pid for pid in args.ids if pid not in gone]
    print(f"{'would remove' if args.dry_run else 'removed'} {len(gone)}: {' '.join(gone)}")
    if missing:
        raise NotFoundError(f"no such person: {' '.join(missing)}")
    return 0


def _operator() -> str:
    """Who runs the command: the sudo caller if any, else the OS user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def cmd_mode_switch(args: argparse.Namespace) -> int:
    """Turn lockdown or free access on or off, site-wide or for one door.

    Through the running daemon's admin API, which has switched the doors when it answers; with
    the daemon stopped (or no admin token), in the file: the daemon applies it when it starts.
    """
    from edged.access import model as access
    from edged.access import modes
    from edged.decide.policy import SITE

    cfg = _load(args)
    scope = args.door or SITE
    body = {
        "mode": args.mode,
        "on": args.state == "on",
        "door": args.door,
        "by": f"cli:{_operator()}",
        "override_group": getattr(args, "override_group", None),
        "schedule": getattr(args, "schedule", None),
    }
    state: dict[str, Any] | None = None
    if config.admin_token(cfg):
        with contextlib.suppress(DaemonDownError):
            state = admin_post(cfg, "/api/v1/modes", body, refused=ModeError)["mode"]
    if state is None:
        _, conn = _database(args)
        try:
            state = asdict(
                modes.switch(
                    conn,
                    scope,
                    args.mode,
                    body["on"],
                    body["by"],
                    group=body["override_group"],
                    schedule=body["schedule"],
                    doors=access.door_names(cfg),
                )
            )
        finally:
            conn.close()
    where = "site" if scope == SITE else f"door {scope}"
    print(
        f"{where}: lockdown {'on' if state['lockdown'] else 'off'}, free access "
        f"{'on' if state['free_access'] else 'off'}"
    )
    return 0


def cmd_mode_show(args: argparse.Namespace) -> int:
    """Show the modes in force and the latest switches."""
    from edged.access import model as access
    from edged.access import modes

    cfg, conn = _database(args)
    try:
        state, log_ = modes.current(conn), modes.changes(conn, args.limit)
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"modes": state, "changes": log_}))
        return 0
    print("\n".join(_mode_lines(state, access.door_names(cfg)) + _change_lines(log_)))
    return 0


def _mode_lines(state: list[dict[str, Any]], doors: set[str]) -> list[str]:
    """One line a scope: lockdown and free access, with their group and schedule."""
    if not state:
        return ["no mode has been switched yet: lockdown and free access are off everywhere"]
    lines = [f"{'SCOPE':<16} {'LOCKDOWN':<32} FREE ACCESS"]
    for mode in state:
        lock = "on" if mode["lockdown"] else "off"
        if mode["override_group"]:
            lock += f" (override group {mode['override_group']})"
        free = "on" if mode["free_access"] else "off"
        if mode["free_schedule"]:
            free += f" (schedule {mode['free_schedule']})"
        stray = (
            "" if mode["scope"] in doors or mode["scope"] == "*" else "  (not a configured door)"
        )
        lines.append(f"{mode['scope']:<16} {lock:<32} {free}{stray}")
    return lines


def _change_lines(log_: list[dict[str, Any]]) -> list[str]:
    """The latest switches, newest first, with who made them."""
    if not log_:
        return []
    lines = ["latest switches (newest first)"]
    for change in log_:
        lines.append(
            f"  {_utc(change['at'])} {change['by']}: {change['scope']} {change['mode']} "
            f"{change['state']} {change['detail'] or ''}".rstrip()
        )
    return lines


def cmd_why(args: argparse.Namespace) -> int:
    """Explain how a stored decision was reached."""
    from edged.decide import explain
    from edged.store import readonly

    conn = readonly.connect(_load(args).storage.database_path)
    try:
        lines = explain.lines(conn, args.event_id)
    finally:
        conn.close()
    print("\n".join(lines))
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Write a stored event's snapshot (a JPEG) to a file or to standard output."""
    from edged.store import readonly, snapshots

    cfg = _load(args)
    conn = readonly.connect(cfg.storage.database_path)
    try:
        row = conn.execute(
            "SELECT image_path, image_offset, image_bytes FROM events WHERE id = ?",
            (args.event_id,),
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise NotFoundError(f"no event {args.event_id}")
    if row["image_path"] is None:
        raise NotFoundError(f"event {args.event_id} has no snapshot")
    data = snapshots.read(
        cfg.storage.images_path, row["image_path"], row["image_offset"], row["image_bytes"]
    )
    if data is None:
        raise NotFoundError(
            f"the snapshot of event {args.event_id} is gone (pruned, or lost in a power cut)"
        )
    if args.output and args.output != "-":
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            raise OutputError(f"{args.output}: {exc.strerror or exc}") from None
        print(f"{args.output}: {len(data)} bytes")
    elif sys.stdout.isatty():
        raise UsageError("not writing a JPEG to a terminal: use -o FILE or a redirection")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _outbox_offline(cfg: config.Config) -> dict[str, Any]:
    """The outbox read from the database itself (the daemon is not running)."""
    from edged.store import readonly
    from edged.upstream import outbox

    if not cfg.upstream.forward_url:
        return {"enabled": False}
    conn = readonly.connect(cfg.storage.database_path)
    try:
        return {**outbox.status(conn, time.time()), "state": "daemon not running"}
    finally:
        conn.close()


def cmd_outbox(args: argparse.Namespace) -> int:
    """Show the records waiting to be forwarded to the upstream."""
    cfg = _load(args)
    try:
        status = admin_get(cfg, "/api/v1/outbox")
    except DaemonDownError:
        status = _outbox_offline(cfg)
    if args.json:
        print(json.dumps(status))
    elif not status.get("enabled"):
        print("forwarding is off (upstream.forward_url is not set)")
    else:
        print(
            f"outbox: {status['depth']} records waiting, oldest {status['age_seconds']:.0f} s "
            f"old; acknowledged up to id {status['forwarded_up_to']}"
        )
        state = status.get("state", "?")
        error = f" (last error: {status['last_error']})" if status.get("last_error") else ""
        print(f"forwarding to {cfg.upstream.forward_url}: {state}{error}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    """Print the version."""
    print(f"edged {__version__}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with edged's usage errors: one ``edged:`` line and exit 64, not 2."""

    def error(self, message: str) -> NoReturn:
        """Report a usage error as one line and exit 64 (EX_USAGE)."""
        command = self.prog.removeprefix("edged").strip() or "edged"
        print(f"edged: {command}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(UsageError.exit_code)


def parser() -> argparse.ArgumentParser:
    """The argument parser (also read by the documentation test)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help=f"configuration file (default: $EDGED_CONFIG or {config.DEFAULT_PATH})",
    )
    top = _Parser(prog="edged", description="Edge daemon for access control.", parents=[common])
    top.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", parents=[common], help="validate the configuration")
    check.add_argument("--print", action="store_true", help="print the effective configuration")
    check.set_defaults(func=cmd_check_config)

    events = sub.add_parser("events", parents=[common], help="print stored events")
    events.add_argument("--since", type=_since, help="ISO date-time (UTC) or epoch seconds")
    events.add_argument("--terminal", help="terminal name")
    events.add_argument("--person", help="person id")
    events.add_argument("--decision", choices=["pass", "deny"])
    count = events.add_mutually_exclusive_group()
    count.add_argument("--limit", type=_count, metavar="N", help="at most N, oldest first")
    count.add_argument("--tail", type=_count, metavar="N", help="the N newest, newest first")
    events.add_argument("--json", action="store_true", help="one JSON object a line")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.set_defaults(func=cmd_events)

    ppl = sub.add_parser("people", help="manage the local people cache")
    ppl_sub = ppl.add_subparsers(dest="people_command", metavar="ACTION")
    imp = ppl_sub.add_parser(
        "import", parents=[common], help="import people from a CSV or JSON file"
    )
    imp.add_argument("file")
    imp.add_argument("--format", choices=["csv", "json"], help="default: from the file name")
    imp.add_argument("--replace", action="store_true", help="remove everyone not in the file")
    imp.add_argument("--dry-run", action="store_true", help="show the difference, change nothing")
    imp.add_argument(
        "--strict", action="store_true", help="refuse the file on any warning (unknown door, …)"
    )
    imp.set_defaults(func=cmd_people_import)
    exp = ppl_sub.add_parser("export", parents=[common], help="write people, groups, … as JSON")
    exp.add_argument("--format", choices=["json", "csv"], default="json")
    exp.add_argument("-o", "--output", help="file to write (default: standard output)")
    exp.set_defaults(func=cmd_people_export)
    lst = ppl_sub.add_parser("list", parents=[common], help="list people")
    lst.add_argument("--group", help="only members of this group")
    lst.add_argument("--json", action="store_true", help="one JSON object a line")
    lst.set_defaults(func=cmd_people_list)
    shw = ppl_sub.add_parser("show", parents=[common], help="show one person")
    shw.add_argument("id")
    shw.add_argument("--json", action="store_true")
    shw.set_defaults(func=cmd_people_show)
    rem = ppl_sub.add_parser("remove", parents=[common], help="remove people by id")
    rem.add_argument("ids", nargs="+", metavar="ID")
    rem.add_argument("--dry-run", action="store_true", help="show what would go, change nothing")
    rem.set_defaults(func=cmd_people_remove)

    mode = sub.add_parser("mode", help="lockdown and free access, site-wide or per door")
    mode_sub = mode.add_subparsers(dest="mode_command", metavar="MODE")
    lock = mode_sub.add_parser("lockdown", parents=[common], help="deny all but an override group")
    lock.add_argument("state", choices=["on", "off"])
    lock.add_argument("--door", help="one door only (default: the whole site)")
    lock.add_argument("--override-group", help="members of this group still pass")
    lock.set_defaults(func=cmd_mode_switch, mode="lockdown")
    free = mode_sub.add_parser("free-access", parents=[common], help="leave doors unlocked")
    free.add_argument("state", choices=["on", "off"])
    free.add_argument("--door", help="one door only (default: the whole site)")
    free.add_argument("--schedule", help="only while this schedule is open (default: always)")
    free.set_defaults(func=cmd_mode_switch, mode="free_access")
    mshow = mode_sub.add_parser("show", parents=[common], help="modes in force, latest switches")
    mshow.add_argument("--limit", type=_count, default=20, help="how many switches to list")
    mshow.add_argument("--json", action="store_true")
    mshow.set_defaults(func=cmd_mode_show)

    why = sub.add_parser("why", parents=[common], help="explain a stored decision")
    why.add_argument("event_id", type=int, metavar="EVENT_ID")
    why.set_defaults(func=cmd_why)

    snap = sub.add_parser("snapshot", parents=[common], help="write an event's snapshot JPEG")
    snap.add_argument("event_id", type=int, metavar="EVENT_ID")
    snap.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    snap.set_defaults(func=cmd_snapshot)

    door = sub.add_parser("door", help="control a door through the running daemon")
    door_sub = door.add_subparsers(dest="action", metavar="ACTION")
    for action, text in (
        ("open", "unlock for the door's unlock_time"),
        ("hold", "keep unlocked until released"),
        ("release", "end the manual hold"),
        ("lock", "lock now: end the timed unlock and every hold"),
    ):
        cmd = door_sub.add_parser(action, parents=[common], help=text)
        cmd.add_argument("door", help="door name")
        cmd.add_argument("--source", help="who asks, for the audit log (default: cli:USER)")
        cmd.set_defaults(func=cmd_door)

    status = sub.add_parser("status", parents=[common], help="readiness and every door's state")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=cmd_status)

    out = sub.add_parser(
        "outbox", parents=[common], help="show records waiting to be forwarded upstream"
    )
    out.add_argument("--json", action="store_true", help="print the status as JSON")
    out.set_defaults(func=cmd_outbox)

    terminal_cli.add_parsers(sub, common)  # terminals, status, simulate

    ver = sub.add_parser("version", parents=[common], help="print the version")
    ver.set_defaults(func=cmd_version)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edged`` command."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (_Parser.error)
        return exc.code if isinstance(exc.code, int) else 0
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser().print_help(sys.stderr)
        return 64
    try:
        return func(args)
    except EdgedError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        for problem in problems:
            print(f"edged: {problem}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
