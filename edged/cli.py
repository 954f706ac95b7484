"""The ``edged`` command: a thin layer over the daemon, the store and the admin API.

Expected failures print one line each and exit with a meaningful code (78 for configuration
errors); only an unexpected error shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edged import __version__, config, logs, terminal_cli
from edged.errors import AdminError, EdgedError

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


def _event_line(event: dict[str, Any]) -> str:
    who = event.get("user_name") or event.get("person_id") or event.get("user_id") or "-"
    what = event["kind"]
    if event.get("decision"):
        what = f"{what} {event['decision']} ({event['reason']})"
    elif event["kind"] == "alarm":
        what = f"alarm code={event.get('alarm_code')} status={event.get('alarm_status')}"
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


def cmd_people_import(args: argparse.Namespace) -> int:
    """Import people from CSV or JSON, all or nothing."""
    from edged import people, store

    cfg = _load(args)
    rows = people.parse_file(Path(args.file), ZoneInfo(cfg.site.timezone), args.format)
    db = store.open_database(cfg.storage.database_path)
    try:
        result = people.apply(db.conn, rows, replace=args.replace, dry_run=args.dry_run)
    finally:
        db.conn.close()
    verb = "would" if args.dry_run else "did"
    print(
        f"{len(rows)} people read; {verb} add {len(result.added)}, update "
        f"{len(result.updated)}, remove {len(result.removed)}, keep {len(result.unchanged)}"
    )
    if args.dry_run:
        for label, ids in (("+", result.added), ("~", result.updated), ("-", result.removed)):
            for pid in ids:
                print(f"  {label} {pid}")
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
