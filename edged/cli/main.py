"""The ``edged`` command: its parser and dispatch; each command group lives in its own module.

``run`` (run, check-config, version), ``events`` (events, why, snapshot), ``people``, ``doors``
(door, mode), ``status``, ``outbox``, ``terminals`` and ``simulate``; ``adminclient`` calls the
running daemon's admin API and ``common`` holds what they share. Expected failures print one line
each and exit with a meaningful code (78 for configuration errors); only an unexpected error
shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from edged import __version__, config
from edged.cli import doors as door_cli
from edged.cli import events as event_cli
from edged.cli import outbox as outbox_cli
from edged.cli import people as people_cli
from edged.cli import run as run_cli
from edged.cli import simulate as simulate_cli
from edged.cli import status as status_cli
from edged.cli import terminals as terminal_cli
from edged.cli import web as web_cli
from edged.cli.common import count
from edged.cli.events import since
from edged.errors import EdgedError, UsageError

Command = Callable[[argparse.Namespace], int]


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
    run.set_defaults(func=run_cli.cmd_run)

    check = sub.add_parser("check-config", parents=[common], help="validate the configuration")
    check.add_argument("--print", action="store_true", help="print the effective configuration")
    check.set_defaults(func=run_cli.cmd_check_config)

    events = sub.add_parser("events", parents=[common], help="print stored events")
    events.add_argument("--since", type=since, help="ISO date-time (UTC) or epoch seconds")
    events.add_argument("--until", type=since, help="received before this (as --since)")
    events.add_argument("--terminal", help="terminal name")
    events.add_argument("--person", help="person id")
    events.add_argument("--decision", choices=["pass", "deny"])
    page = events.add_mutually_exclusive_group()
    page.add_argument("--limit", type=count, metavar="N", help="at most N, oldest first")
    page.add_argument("--tail", type=count, metavar="N", help="the N newest, newest first")
    events.add_argument("--json", action="store_true", help="one JSON object a line")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    events.add_argument(
        "--format",
        choices=["text", "csv", "jsonl"],
        default="text",
        help="csv or jsonl: the audit export, every matching event streamed",
    )
    events.add_argument("-o", "--output", metavar="FILE", help="export to FILE (with --format)")
    events.set_defaults(func=event_cli.cmd_events)

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
    imp.set_defaults(func=people_cli.cmd_people_import)
    exp = ppl_sub.add_parser("export", parents=[common], help="write people, groups, … as JSON")
    exp.add_argument("--format", choices=["json", "csv"], default="json")
    exp.add_argument("-o", "--output", help="file to write (default: standard output)")
    exp.set_defaults(func=people_cli.cmd_people_export)
    lst = ppl_sub.add_parser("list", parents=[common], help="list people")
    lst.add_argument("--group", help="only members of this group")
    lst.add_argument("--json", action="store_true", help="one JSON object a line")
    lst.set_defaults(func=people_cli.cmd_people_list)
    shw = ppl_sub.add_parser("show", parents=[common], help="show one person")
    shw.add_argument("id")
    shw.add_argument("--json", action="store_true")
    shw.set_defaults(func=people_cli.cmd_people_show)
    rem = ppl_sub.add_parser("remove", parents=[common], help="remove people by id")
    rem.add_argument("ids", nargs="+", metavar="ID")
    rem.add_argument("--dry-run", action="store_true", help="show what would go, change nothing")
    rem.set_defaults(func=people_cli.cmd_people_remove)

    mode = sub.add_parser("mode", help="lockdown and free access, site-wide or per door")
    mode_sub = mode.add_subparsers(dest="mode_command", metavar="MODE")
    lock = mode_sub.add_parser("lockdown", parents=[common], help="deny all but an override group")
    lock.add_argument("state", choices=["on", "off"])
    lock.add_argument("--door", help="one door only (default: the whole site)")
    lock.add_argument("--override-group", help="members of this group still pass")
    lock.set_defaults(func=door_cli.cmd_mode_switch, mode="lockdown")
    free = mode_sub.add_parser("free-access", parents=[common], help="leave doors unlocked")
    free.add_argument("state", choices=["on", "off"])
    free.add_argument("--door", help="one door only (default: the whole site)")
    free.add_argument("--schedule", help="only while this schedule is open (default: always)")
    free.set_defaults(func=door_cli.cmd_mode_switch, mode="free_access")
    mshow = mode_sub.add_parser("show", parents=[common], help="modes in force, latest switches")
    mshow.add_argument("--limit", type=count, default=20, help="how many switches to list")
    mshow.add_argument("--json", action="store_true")
    mshow.set_defaults(func=door_cli.cmd_mode_show)

    why = sub.add_parser("why", parents=[common], help="explain a stored decision")
    why.add_argument("event_id", type=int, metavar="EVENT_ID")
    why.set_defaults(func=event_cli.cmd_why)

    snap = sub.add_parser("snapshot", parents=[common], help="write an event's snapshot JPEG")
    snap.add_argument("event_id", type=int, metavar="EVENT_ID")
    snap.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    snap.set_defaults(func=event_cli.cmd_snapshot)

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
        cmd.set_defaults(func=door_cli.cmd_door)

    status = sub.add_parser("status", parents=[common], help="readiness and every door's state")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=status_cli.cmd_status)

    out = sub.add_parser(
        "outbox", parents=[common], help="show records waiting to be forwarded upstream"
    )
    out.add_argument("--json", action="store_true", help="print the status as JSON")
    out.set_defaults(func=outbox_cli.cmd_outbox)

    _terminal_parsers(sub, common)  # terminals, simulate

    web = sub.add_parser("web", help="accounts of the web page")
    web_sub = web.add_subparsers(dest="web_command", metavar="ACTION")
    passwd = web_sub.add_parser(
        "passwd", parents=[common], help="create an account or set its password"
    )
    passwd.add_argument("name", help="account name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    passwd.set_defaults(func=web_cli.cmd_passwd)
    users = web_sub.add_parser("users", parents=[common], help="list the accounts")
    users.set_defaults(func=web_cli.cmd_users)
    wrm = web_sub.add_parser("remove", parents=[common], help="remove an account")
    wrm.add_argument("name")
    wrm.set_defaults(func=web_cli.cmd_remove)

    ver = sub.add_parser("version", parents=[common], help="print the version")
    ver.set_defaults(func=run_cli.cmd_version)
    return top


def _terminal_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``terminals`` and ``simulate`` to the command's subparsers."""
    terms = sub.add_parser("terminals", help="trust, re-register and discover terminals")
    tsub = terms.add_subparsers(dest="terminals_command", metavar="ACTION")
    show = tsub.add_parser("show", parents=[common], help="show terminals' address bindings")
    show.add_argument("name", nargs="?", help="one terminal (default: all)")
    show.set_defaults(func=terminal_cli.cmd_show)
    trust = tsub.add_parser(
        "trust", parents=[common], help="trust a terminal's certificate (or --address)"
    )
    trust.add_argument("name")
    trust.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    trust.add_argument(
        "--address", help="re-pin a receive-only terminal to this source address instead"
    )
    trust.set_defaults(func=terminal_cli.cmd_trust)
    resub = tsub.add_parser(
        "resubscribe", parents=[common], help="check and restore registrations now"
    )
    resub.add_argument("name", nargs="?", help="one terminal (default: all)")
    resub.set_defaults(func=terminal_cli.cmd_resubscribe)
    sync = tsub.add_parser(
        "sync", parents=[common], help="bring terminals' people, groups and rules in step now"
    )
    sync.add_argument("name", nargs="?", help="one terminal (default: every managed one)")
    sync.add_argument("--dry-run", action="store_true", help="show what would be written")
    sync.add_argument(
        "--check", action="store_true", help="show what differs; exit 1 when anything does"
    )
    sync.set_defaults(func=terminal_cli.cmd_sync)
    disc = tsub.add_parser("discover", parents=[common], help="list terminals found by mDNS")
    disc.add_argument("--timeout", type=float, default=5.0, help="seconds to listen")
    disc.set_defaults(func=terminal_cli.cmd_discover)

    sim = sub.add_parser("simulate", parents=[common], help="run simulated terminals")
    sim.add_argument("--count", type=int, default=1, help="number of terminals")
    sim.add_argument("--port", type=int, default=8443, help="port of the first (0: any)")
    sim.add_argument("--serial", default="SIM0000000000001", help="serial of the first")
    sim.add_argument(
        "--from-config",
        action="store_true",
        help="simulate the configuration's terminals (host 127.0.0.1)",
    )
    sim.add_argument("--username", default="admin")
    sim.add_argument("--password", default="admin-pass")
    sim.add_argument(
        "--firmware",
        choices=["1.0", "1.1", "1.2.1", "1.3.0", "new", "old"],
        default="1.3.0",
        help="firmware version to behave as (new = 1.3.0, old = 1.1)",
    )
    sim.add_argument("--rate", type=float, default=0.2, help="records a second, each")
    sim.add_argument("--image-bytes", type=int, default=0, help="snapshot size in pushes")
    sim.add_argument("--event-dest", default="", help="registration at boot")
    sim.add_argument("--reboot-every", type=float, default=0.0, help="seconds (0: never)")
    sim.add_argument("--reboot-seconds", type=float, default=5.0, help="time away")
    sim.add_argument(
        "--clock-skew", type=float, default=0.0, help="seconds its clock runs ahead (<0: behind)"
    )
    sim.add_argument("--cert-dir", default="var/simulator", help="keeps certificates stable")
    sim.add_argument("--for", dest="duration", type=float, default=0.0, help="stop after")
    sim.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    sim.set_defaults(func=simulate_cli.cmd_simulate)


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
