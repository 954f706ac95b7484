"""``edged status``: readiness, every door and every terminal, from the daemon or the database."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from edged import config
from edged.cli import adminclient, common
from edged.cli import doors as door_cli
from edged.errors import DaemonDownError
from edged.terminals import client as terminals


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
    ready = adminclient.admin_get(cfg, "/readyz")
    site = adminclient.admin_get(cfg, "/api/v1/doors")
    listing = adminclient.admin_get(cfg, "/api/v1/terminals").get("terminals", [])
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


def _alarm_detail(check: dict[str, Any]) -> str:
    """What a raised alarm is about, for ``edged status`` (e.g. forged terminal requests)."""
    latest = check.get("latest") if check.get("alarm") else None
    if not latest:
        return ""
    return (
        f": {check.get('refused_24h')} forged requests in 24 h, latest {latest['at']} from "
        f"{latest['source']} claiming {latest['terminal'] or latest['serial']}"
    )


def _doors_lines(site: dict[str, Any]) -> list[str]:
    flags = [f for f in ("fire", "lockdown", "free_access", "siren") if site.get(f)]
    lines = [
        f"doors{': ' + ', '.join(f.upper().replace('_', ' ') for f in flags) if flags else ''}"
    ]
    doors = site.get("doors", [])
    if not doors:
        return [*lines, "  (none configured)"]
    return [*lines, f"  {door_cli.door_header()}", *(door_cli.door_line(d) for d in doors)]


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
    cfg = common.load(args)
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
