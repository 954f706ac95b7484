"""``edged door`` and ``edged mode``: a door's lock, lockdown and free access."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
from dataclasses import asdict
from typing import Any

from edged import config
from edged.cli import adminclient, common
from edged.errors import DaemonDownError, DoorError, ModeError

DOOR_COLUMNS = ("door", "lock", "contact", "alarms", "last decision")


def door_row(door: dict[str, Any]) -> str:
    """One door as a row of ``DOOR_COLUMNS`` (``edged door``, ``edged status``)."""
    if door.get("locked") is None:
        lock = "-"
    else:
        lock = (
            "locked" if door["locked"] else f"UNLOCKED ({common.text(door.get('why'), 'unknown')})"
        )
    alarms = ",".join(a["kind"] for a in door.get("alarms") or []) or "no alarms"
    last = door.get("last_decision")
    decision = "no decision yet"
    if last:
        reason = f" ({last['reason']})" if last.get("reason") else ""
        decision = f"last {common.text(last.get('decision'))}{reason}"
    holds = f" holds={','.join(door['holds'])}" if door.get("holds") else ""
    contact = common.text(
        door.get("contact"), "no contact" if door.get("locked") is not None else "-"
    )
    return f"{door['name']:<16} {lock:<24} {contact:<10} {alarms:<20} {decision}{holds}"


def door_header() -> str:
    """The header over ``door_row`` lines."""
    door, lock, contact, alarms, last = (c.upper() for c in DOOR_COLUMNS)
    return f"{door:<16} {lock:<24} {contact:<10} {alarms:<20} {last}"


def door_line(door: dict[str, Any]) -> str:
    """A door row indented under the ``doors`` heading of ``edged status``."""
    return f"  {door_row(door)}"


def cmd_door(args: argparse.Namespace) -> int:
    """Open (timed), hold, release or lock a door through the running daemon."""
    cfg = common.load(args)
    doors = [d.name for d in cfg.doors]
    if doors and args.door not in doors:  # without doors here, the daemon's 404 tells
        from edged.access import model as access

        raise DoorError(access.unknown("door", args.door, doors))
    source = args.source or f"cli:{getpass.getuser()}"
    answer = adminclient.admin_post(
        cfg, f"/api/v1/doors/{args.door}/{args.action}", {"source": source}
    )
    print(door_header())
    print(door_row(answer["door"]))
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

    cfg = common.load(args)
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
            state = adminclient.admin_post(cfg, "/api/v1/modes", body, refused=ModeError)["mode"]
    if state is None:
        _, conn = common.database(args)
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

    cfg, conn = common.database(args)
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
            f"  {common.utc(change['at'])} {change['by']}: {change['scope']} {change['mode']} "
            f"{change['state']} {change['detail'] or ''}".rstrip()
        )
    return lines
