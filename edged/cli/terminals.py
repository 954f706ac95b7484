"""``edged terminals show|trust|resubscribe|sync|discover``: trust, re-pin, fill, find terminals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from edged import config
from edged.cli import adminclient
from edged.errors import AdminError, ConfigError, TerminalError
from edged.terminals import client as terminals
from edged.terminals import tlspin

log = logging.getLogger(__name__)


def _named(cfg: config.Config, name: str) -> config.TerminalConfig:
    for terminal in cfg.terminals:
        if terminal.name == name:
            return terminal
    known = ", ".join(t.name for t in cfg.terminals) or "none"
    raise ConfigError(f"no terminal named {name!r} (configured: {known})")


def _terminal(cfg: config.Config, name: str) -> config.TerminalConfig:
    terminal = _named(cfg, name)
    if not terminal.host:
        raise ConfigError(f"terminal {name!r} has no host: edged does not call it")
    return terminal


def cmd_trust(args: argparse.Namespace) -> int:
    """Show the certificate a terminal presents and record it as trusted."""
    from edged.store import events as store

    cfg = config.load(getattr(args, "config", None))
    if args.address is not None:
        return _trust_address(cfg, args.name, args.address, args.yes)
    terminal = _terminal(cfg, args.name)
    try:
        presented = asyncio.run(tlspin.fetch_certificate(terminal.host, terminal.port))
    except (OSError, TimeoutError) as exc:
        raise TerminalError(f"cannot reach {terminal.host}:{terminal.port}: {exc}") from None
    conn = store.open_connection(cfg.storage.database_path)
    try:
        current = terminals.pin_for(conn, terminal)
        print(f"terminal:    {terminal.name} ({terminal.host}:{terminal.port})")
        print(f"fingerprint: {presented.fingerprint}")
        print(f"subject:     {presented.subject}")
        print(f"valid until: {presented.not_after}")
        if current == presented.fingerprint:
            print("already trusted")
            return 0
        if current:
            print(f"WARNING: differs from the trusted {current}")
        if not args.yes and not _confirm("Trust this certificate? [y/N] "):
            print("not trusted")
            return 1
        terminals.record_pin(conn, terminal, presented)
    finally:
        conn.close()
    _retry_now(cfg, terminal.name)
    if terminal.tls_fingerprint:
        print("note: tls_fingerprint in the configuration wins over the recorded fingerprint")
    return 0


def _trust_address(cfg: config.Config, name: str, given: str, yes: bool) -> int:
    """Re-pin a receive-only terminal to a new source address (``trust NAME --address``)."""
    import time

    from edged.receive import binding
    from edged.store import events as store
    from edged.store import presence

    terminal = _named(cfg, name)
    if terminal.address or terminal.host:
        key = "address" if terminal.address else "host"
        raise ConfigError(
            f"terminal {name!r} is bound by its configured {key} "
            f"{getattr(terminal, key)!r}: change it in the configuration"
        )
    address = binding.parse_ip(given)
    if address is None:
        raise ConfigError(f"--address: {given!r} is not an IP address")
    conn = store.open_connection(cfg.storage.database_path)
    try:
        current = presence.pinned_address(conn, terminal.serial)
        print(f"terminal: {terminal.name} ({terminal.serial})")
        print(f"pinned:   {current or 'not pinned yet'}")
        print(f"new:      {address}")
        if current == str(address):
            print("already pinned to this address")
            return 0
        if not yes and not _confirm(
            f"Accept {terminal.name}'s requests only from {address}? [y/N] "
        ):
            print("not changed")
            return 1
        presence.pin(conn, terminal.serial, str(address), "operator", time.time())
    finally:
        conn.close()
    print("pinned; the running daemon applies it to the next request")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Show each terminal's address binding: what it is bound to, and why."""
    from edged.store import events as store

    cfg = config.load(getattr(args, "config", None))
    chosen = [_named(cfg, args.name)] if args.name else cfg.terminals
    health = _daemon_health(cfg, chosen)
    conn = store.open_connection(cfg.storage.database_path)
    try:
        for terminal in chosen:
            print("\n".join(_address_lines(conn, terminal)))
            if terminal.host:
                print("\n".join(clock_settings_lines(health, terminal.serial)))
            people = _people_lines(conn, terminal)
            if people:
                print("\n".join(people))
    finally:
        conn.close()
    return 0


def _daemon_health(
    cfg: config.Config, chosen: list[config.TerminalConfig]
) -> dict[str, Any] | None:
    """The running daemon's view of the managed terminals, by serial; None if it does not answer."""
    if not any(t.host for t in chosen):
        return {}
    try:
        listing = adminclient.admin_get(cfg, "/api/v1/terminals")
    except (AdminError, ConfigError) as exc:
        log.debug("no running daemon asked: %s", exc)
        return None
    terminals_ = listing.get("terminals", []) if isinstance(listing, dict) else []
    return {str(t.get("serial")): t for t in terminals_ if isinstance(t, dict)}


def clock_settings_lines(health: dict[str, Any] | None, serial: str) -> list[str]:
    """The clock and settings part of ``terminals show`` for a managed terminal."""
    if health is None:
        return ["  clock:     (the daemon is not running: not known)"]
    entry = health.get(serial) or {}
    lines = []
    clock = entry.get("clock") or {}
    mode = clock.get("mode") or "off"
    if mode == "off":
        lines.append("  clock:     not managed (terminal_clock.mode = off)")
    elif clock.get("drift") is None:
        lines.append(f"  clock:     {mode}, not measured yet{_error(clock)}")
    else:
        state = "DRIFTING" if clock.get("state") == "drifting" else clock.get("state")
        zone = clock.get("time_zone")
        zone_text = "-" if zone is None else f"UTC{int(zone):+d}"
        residual = clock.get("zone_residual_minutes") or 0
        if residual:
            zone_text += f" ({residual} min behind the site)"
        lines.append(
            f"  clock:     {state} {clock['drift']:+.3f} s (round trip {clock.get('round_trip')} s,"
            f" alarm past {clock.get('max_drift'):g} s), {mode}, zone {zone_text}, "
            f"{clock.get('sets', 0)} set{_error(clock)}"
        )
    settings = entry.get("settings") or {}
    wanted = settings.get("wanted") or {}
    if not wanted:
        lines.append("  settings:  none chosen")
        return lines
    lines.append(
        f"  settings:  {settings.get('state')}, {len(wanted)} kept, "
        f"{settings.get('writes', 0)} written{_error(settings)}"
    )
    for key, drift in (settings.get("drift") or {}).items():
        lines.append(
            f"    drift:   {key} was {drift.get('terminal')!r}, set {drift.get('wanted')!r}"
        )
    for key in settings.get("unsupported") or []:
        lines.append(f"    unsupported by its firmware: {key}")
    return lines


def _error(part: dict[str, Any]) -> str:
    return f"; error: {part['error']}" if part.get("error") else ""


def _address_lines(conn: Any, terminal: config.TerminalConfig) -> list[str]:
    """The address part of ``terminals show`` for one terminal."""
    import time

    from edged.receive import binding
    from edged.store import presence

    resolved = binding.resolve_now(terminal.host) if terminal.host and not terminal.address else ()
    pin = presence.pin_info(conn, terminal.serial)
    bound = binding.binding_of(terminal, resolved, pin[0] if pin else None)
    lines = [f"{terminal.name} ({terminal.serial})", f"  bound to:  {bound.describe()}"]
    if bound.how == "pinned" and pin:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pin[1]))
        lines.append(f"  pinned:    {pin[2]} at {when}")
    seen = presence.last_seen_address(conn, terminal.serial)
    if seen:
        lines.append(f"  last seen: {seen}")
    refused = presence.refused_by_terminal(conn, time.time() - binding.ALARM_WINDOW)
    if refused.get(terminal.serial):
        lines.append(
            f"  FORGED:    {refused[terminal.serial]} requests from other addresses in 24 h"
        )
    return lines


def _people_lines(conn: Any, terminal: config.TerminalConfig) -> list[str]:
    """The people part of ``terminals show``: the last sync, people in step, refusals."""
    from edged.access import terminalstate

    found = terminalstate.summary(conn, terminal.serial)
    if found is None:
        return ["  people:    never synced"] if terminal.host else []
    lines = [
        f"  people:    {found['in_step']} of {found['desired']} in step, "
        f"{found['errors']} refused; last sync {_when(found['synced_at'])}"
    ]
    if found["progress"]:
        lines.append(f"  syncing:   {found['progress']} writes done")
    for item in found["people_errors"][:10]:
        lines.append(
            f"  REFUSED:   user {item['user_id']} (person {item['person_id']}): {item['error']}"
        )
    lines += [f"  offline:   {text}" for text in found["limits"]]
    return lines


def _when(ts: float | None) -> str:
    import time

    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def cmd_sync(args: argparse.Namespace) -> int:
    """Bring terminals' people, groups and rules in step now (or show what differs)."""
    from edged.store import events as store

    cfg = config.load(getattr(args, "config", None))
    chosen = [_terminal(cfg, args.name)] if args.name else [t for t in cfg.terminals if t.host]
    if not chosen:
        raise ConfigError("no terminal is managed (none has a host)")
    compare = args.dry_run or args.check
    if not compare and not cfg.people_sync.enabled:
        raise ConfigError(
            "people_sync.enabled is false: edged does not own the terminals' people "
            "(--dry-run and --check only compare)"
        )
    conn = store.open_connection(cfg.storage.database_path)
    differs = False
    try:
        for terminal in chosen:
            report = asyncio.run(_sync_one(cfg, terminal, conn, compare))
            print("\n".join(_report_lines(terminal.name, report, compare)))
            differs |= bool(report.changes or report.errors or report.refused or report.limits)
    finally:
        conn.close()
    return 1 if args.check and differs else 0


class _Local:
    """The state database as the people sync reads it, from a command (no live answers to
    step aside for: its urgency is never marked)."""

    def __init__(self, path: Any, conn: Any) -> None:
        from edged.store.urgency import Urgency

        self.path = path
        self.reader = conn
        self.urgency = Urgency()


async def _sync_one(
    cfg: config.Config, terminal: config.TerminalConfig, conn: Any, compare: bool
) -> Any:
    from edged.terminals.peoplesync import PeopleSync

    sync = PeopleSync(cfg, terminal, _Local(cfg.storage.database_path, conn))
    try:
        return await sync.sync_once(dry_run=compare, retry_errors=not compare)
    finally:
        if sync.client is not None:
            await sync.client.aclose()


def _report_lines(name: str, report: Any, compare: bool) -> list[str]:
    verb = "would write" if compare else "wrote"
    signs = [c.sign for c in report.changes]
    count = len(signs) if compare else report.written
    lines = [
        f"{name}: {report.desired} people for the terminal; {verb} {count} "
        f"(add {signs.count('+')}, replace {signs.count('~')}, remove {signs.count('-')})"
    ]
    if compare:
        lines += [f"  {c.text()}" for c in report.changes]
    lines += [f"  refused: user {k}: {v}" for k, v in sorted(report.errors.items())]
    lines += [f"  not on the terminal: person {k}: {v}" for k, v in sorted(report.refused.items())]
    lines += [f"  cannot express: {text}" for text in report.limits]
    lines += [f"  note: {text}" for text in report.notes]
    return lines


def _retry_now(cfg: config.Config, name: str) -> None:
    """Ask the running daemon to use the new trust at once (it also notices by itself)."""
    try:
        adminclient.admin_post(cfg, "/api/v1/terminals/resubscribe", {"name": name})
    except (AdminError, ConfigError) as exc:
        log.debug("no running daemon told: %s", exc)
        print("trusted; a running daemon uses it within reconciler.probe_interval")
        return
    print("trusted; the running daemon is registering it now")


def _confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for confirmation: check the fingerprint, use --yes")
    return input(prompt).strip().lower() in ("y", "yes")


def cmd_resubscribe(args: argparse.Namespace) -> int:
    """Ask the running daemon to check and restore registrations now."""
    cfg = config.load(getattr(args, "config", None))
    answer = adminclient.admin_post(cfg, "/api/v1/terminals/resubscribe", {"name": args.name})
    print("reconciling: " + ", ".join(answer.get("terminals", [])))
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    """List terminals announcing themselves by mDNS."""
    from edged.terminals import discovery

    cfg = config.load(getattr(args, "config", None))
    found = discovery.browse(args.timeout)
    configured = {t.serial for t in cfg.terminals}
    if not found:
        print(f"no terminal announced itself within {args.timeout:g} s")
        return 0
    for item in found:
        mark = "configured" if item.serial in configured else "not configured"
        print(f"{item.serial:<20} {item.model:<16} {item.address:<22} {mark}")
    return 0
