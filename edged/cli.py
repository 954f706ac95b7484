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
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edged import __version__, config, logs, terminal_cli, terminals
from edged.errors import AdminError, AdminUnreachable, EdgedError, ModeError, NotFoundError

Command = Callable[[argparse.Namespace], int]


def _load(args: argparse.Namespace) -> config.Config:
    return config.load(getattr(args, "config", None))


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from edged import server

    cfg = _load(args)
    logs.setup(args.log_level or cfg.logging.level, cfg.logging.format)
    asyncio.run(server.run(cfg))
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


def admin_get(cfg: config.Config, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET from the running daemon's admin API."""
    import httpx

    url = _admin_url(cfg, path)
    try:
        response = httpx.get(url, params=params, timeout=10.0)
    except httpx.HTTPError as exc:
        raise AdminError(f"cannot reach edged at {url}: {exc} (is it running?)") from None
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
        raise AdminUnreachable(f"cannot reach edged at {url}: {exc} (is it running?)") from None
    if response.status_code >= 400:
        try:
            message = response.json().get("msg") or response.text[:200]
        except ValueError:
            message = response.text[:200]
        if response.status_code == 422:
            raise refused(message)
        raise AdminError(f"{url}: HTTP {response.status_code}: {message}")
    return response.json()


def _door_line(door: dict[str, Any]) -> str:
    lock = "locked" if door["locked"] else f"UNLOCKED ({door['why']})"
    contact = door.get("contact") or "no contact"
    alarms = ",".join(a["kind"] for a in door.get("alarms", [])) or "no alarms"
    last = door.get("last_decision") or {}
    decision = f"last {last.get('decision')} ({last.get('reason')})" if last else "no decision yet"
    holds = f" holds={','.join(door['holds'])}" if door.get("holds") else ""
    return f"  {door['name']:<16} {lock:<24} {contact:<10} {alarms:<20} {decision}{holds}"


def cmd_door(args: argparse.Namespace) -> int:
    """Open (timed), hold, release or lock a door through the running daemon."""
    import getpass

    cfg = _load(args)
    source = args.source or f"cli:{getpass.getuser()}"
    answer = admin_post(cfg, f"/api/v1/doors/{args.door}/{args.action}", {"source": source})
    print(_door_line(answer["door"]).strip())
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


def cmd_status(args: argparse.Namespace) -> int:
    """Print readiness, every door's state and every terminal's health."""
    cfg = _load(args)
    ready = admin_get(cfg, "/readyz")
    site = admin_get(cfg, "/api/v1/doors")
    listing = admin_get(cfg, "/api/v1/terminals").get("terminals", [])
    if args.json:
        print(json.dumps({"ready": ready, "doors": site, "terminals": listing}))
        return 0 if ready.get("ready") else 1
    print(f"{cfg.site.name}: {'ready' if ready.get('ready') else 'NOT READY'}")
    for name, check in ready.get("checks", {}).items():
        if "ok" in check:
            state = "ALARM" if check.get("alarm") else "ok" if check["ok"] else "FAILING"
            print(f"  {name:<10} {state}{_alarm_detail(check)}")
    malformed = ready.get("checks", {}).get("receiver", {}).get("malformed") or {}
    if malformed.get("count"):
        print(_malformed_line(malformed))
    flags = [f for f in ("fire", "lockdown", "siren") if site.get(f)]
    print(f"doors{': ' + ', '.join(f.upper() for f in flags) if flags else ''}")
    for door in site.get("doors", []):
        print(_door_line(door))
    print("\n".join(terminals.status_section(listing)))
    return 0 if ready.get("ready") else 1


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
        what = f"{what} {event['decision']} ({event['reason']})"
    elif event["kind"] == "alarm":
        what = f"alarm code={event.get('alarm_code')} status={event.get('alarm_status')}"
    if str(event.get("door_outcome") or "").startswith("refused"):
        what += f", door {event['door_outcome']}"  # granted, door refused: lockdown
    flags = " replayed" if event.get("replayed") else ""
    if event.get("duplicates"):
        flags += f" dup x{event['duplicates']}"
    where = event.get("terminal") or event["serial"]
    return f"{event['id']:>8} {event['received_at']} {where:<16} {who:<20} {what}{flags}"


def cmd_events(args: argparse.Namespace) -> int:
    """Print stored events; --follow keeps printing new ones."""
    cfg = _load(args)
    params: dict[str, Any] = {"limit": args.limit}
    for key in ("since", "terminal", "person", "decision"):
        value = getattr(args, key)
        if value:
            params[key] = value
    after = 0
    while True:
        page = admin_get(cfg, "/api/v1/events", {**params, "after": after})
        for event in page["events"]:
            print(json.dumps(event) if args.json else _event_line(event), flush=True)
        after = page["last_id"]
        if page["next_after"] is not None:
            continue
        if not args.follow:
            return 0
        time.sleep(1.0)


def _database(args: argparse.Namespace) -> tuple[config.Config, Any]:
    """The configuration and an open (migrated) connection to the state database."""
    from edged import store

    cfg = _load(args)
    return cfg, store.open_database(cfg.storage.database_path).conn


def cmd_people_import(args: argparse.Namespace) -> int:
    """Import people (and groups, schedules, doors, …) from CSV or JSON, all or nothing."""
    from edged import people

    cfg, conn = _database(args)
    try:
        doc = people.load_file(Path(args.file), ZoneInfo(cfg.site.timezone), args.format)
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
    from edged import people

    cfg, conn = _database(args)
    tz = ZoneInfo(cfg.site.timezone)
    try:
        with contextlib.ExitStack() as stack:
            out = sys.stdout
            if args.output and args.output != "-":
                out = stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            if args.format == "csv":
                people.export_csv(conn, tz, out)
            else:
                json.dump(people.export(conn, tz), out, indent=1, ensure_ascii=False)
                out.write("\n")
    finally:
        conn.close()
    return 0


def cmd_people_list(args: argparse.Namespace) -> int:
    """List people (id, name, type, groups), optionally of one group."""
    from edged import people

    _, conn = _database(args)
    try:
        rows = people.listing(conn, group=args.group)
    finally:
        conn.close()
    for row in rows:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
            continue
        flags = " BLOCKED" if row["blocked"] else ""
        groups = ",".join(row["groups"]) or "-"
        print(f"{row['id']:<20} {row['name']:<28} {row['type']:<10} {groups}{flags}")
    return 0


def cmd_people_show(args: argparse.Namespace) -> int:
    """Show one person: validity, groups, credentials (masked)."""
    from edged import people

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
        text = ", ".join(value) if isinstance(value, list) else value
        print(f"{key:<12} {'' if text is None else text}")
    return 0


def cmd_people_remove(args: argparse.Namespace) -> int:
    """Remove people by id, with their credentials and memberships."""
    from edged import people

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
    from edged import modes
    from edged.policy import SITE

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
        with contextlib.suppress(AdminUnreachable):
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
    from edged import modes

    _, conn = _database(args)
    try:
        state, log_ = modes.current(conn), modes.changes(conn, args.limit)
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"modes": state, "changes": log_}))
        return 0
    for mode in state:
        extra = f" (override group {mode['override_group']})" if mode["override_group"] else ""
        sched = f" (schedule {mode['free_schedule']})" if mode["free_schedule"] else ""
        print(
            f"{mode['scope']:<16} lockdown {'on' if mode['lockdown'] else 'off'}{extra}, "
            f"free access {'on' if mode['free_access'] else 'off'}{sched}"
        )
    for change in log_:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(change["at"]))
        print(
            f"  {when} {change['by']}: {change['scope']} {change['mode']} {change['state']} "
            f"{change['detail']}".rstrip()
        )
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    """Explain how a stored decision was reached."""
    from edged import explain

    _, conn = _database(args)
    try:
        lines = explain.lines(conn, args.event_id)
    finally:
        conn.close()
    print("\n".join(lines))
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Write a stored event's snapshot (a JPEG) to a file or to standard output."""
    from edged import snapshots

    cfg, conn = _database(args)
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
            raise EdgedError(f"{args.output}: {exc.strerror or exc}") from None
        print(f"{args.output}: {len(data)} bytes")
    elif sys.stdout.isatty():
        raise EdgedError("not writing a JPEG to a terminal: use -o FILE or a redirection")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _outbox_offline(cfg: config.Config) -> dict[str, Any]:
    """The outbox read from the database itself (the daemon is not running)."""
    from edged import outbox, store

    if not cfg.upstream.forward_url:
        return {"enabled": False}
    db = store.open_database(cfg.storage.database_path)
    try:
        return {**outbox.status(db.conn, time.time()), "state": "daemon not running"}
    finally:
        db.conn.close()


def cmd_outbox(args: argparse.Namespace) -> int:
    """Show the records waiting to be forwarded to the upstream."""
    cfg = _load(args)
    try:
        status = admin_get(cfg, "/api/v1/outbox")
    except AdminError:
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


def parser() -> argparse.ArgumentParser:
    """The argument parser (also read by the documentation test)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help=f"configuration file (default: $EDGED_CONFIG or {config.DEFAULT_PATH})",
    )
    top = argparse.ArgumentParser(
        prog="edged", description="Edge daemon for access control.", parents=[common]
    )
    top.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", parents=[common], help="validate the configuration")
    check.add_argument("--print", action="store_true", help="print the effective configuration")
    check.set_defaults(func=cmd_check_config)

    events = sub.add_parser("events", parents=[common], help="print stored events")
    events.add_argument("--since", help="ISO date-time or epoch seconds")
    events.add_argument("--terminal", help="terminal name")
    events.add_argument("--person", help="person id")
    events.add_argument("--decision", choices=["pass", "deny"])
    events.add_argument("--limit", type=int, default=200, help="page size")
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
    mshow.add_argument("--limit", type=int, default=20, help="how many switches to list")
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

    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=cmd_version)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edged`` command."""
    args = parser().parse_args(argv)
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
