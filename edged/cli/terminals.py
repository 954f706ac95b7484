"""The terminals' commands: ``edged terminals show|trust|resubscribe|discover``,
``edged simulate``. Registered in ``cli.parser()`` by ``add_parsers``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from edged import config
from edged.errors import AdminError, ConfigError, TerminalError
from edged.terminals import client as terminals
from edged.terminals import tlspin

if TYPE_CHECKING:
    from edged.sim.terminal import SimSettings

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
    conn = store.open_connection(cfg.storage.database_path)
    try:
        for terminal in chosen:
            print("\n".join(_address_lines(conn, terminal)))
    finally:
        conn.close()
    return 0


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


def _retry_now(cfg: config.Config, name: str) -> None:
    """Ask the running daemon to use the new trust at once (it also notices by itself)."""
    try:
        admin_post(cfg, "/api/v1/terminals/resubscribe", {"name": name})
    except (AdminError, ConfigError) as exc:
        log.debug("no running daemon told: %s", exc)
        print("trusted; a running daemon uses it within reconciler.probe_interval")
        return
    print("trusted; the running daemon is registering it now")


def _confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for confirmation: check the fingerprint, use --yes")
    return input(prompt).strip().lower() in ("y", "yes")


def admin_post(cfg: config.Config, path: str, body: dict[str, Any]) -> Any:
    """POST to the running daemon's admin API with the admin token."""
    import httpx

    from edged.cli.main import _admin_url

    url = _admin_url(cfg, path)
    headers = {"authorization": f"Bearer {config.admin_token(cfg)}"}
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise AdminError(f"cannot reach edged at {url}: {exc} (is it running?)") from None
    if response.status_code >= 400:
        raise AdminError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    return response.json()


def cmd_resubscribe(args: argparse.Namespace) -> int:
    """Ask the running daemon to check and restore registrations now."""
    cfg = config.load(getattr(args, "config", None))
    answer = admin_post(cfg, "/api/v1/terminals/resubscribe", {"name": args.name})
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


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run simulated terminals on loopback until interrupted (or for --for seconds)."""
    from edged import logs

    logs.setup(args.log_level, "text")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(simulate_main(args))
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``terminals`` and ``simulate`` to the command's subparsers."""
    terms = sub.add_parser("terminals", help="trust, re-register and discover terminals")
    tsub = terms.add_subparsers(dest="terminals_command", metavar="ACTION")
    show = tsub.add_parser("show", parents=[common], help="show terminals' address bindings")
    show.add_argument("name", nargs="?", help="one terminal (default: all)")
    show.set_defaults(func=cmd_show)
    trust = tsub.add_parser(
        "trust", parents=[common], help="trust a terminal's certificate (or --address)"
    )
    trust.add_argument("name")
    trust.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    trust.add_argument(
        "--address", help="re-pin a receive-only terminal to this source address instead"
    )
    trust.set_defaults(func=cmd_trust)
    resub = tsub.add_parser(
        "resubscribe", parents=[common], help="check and restore registrations now"
    )
    resub.add_argument("name", nargs="?", help="one terminal (default: all)")
    resub.set_defaults(func=cmd_resubscribe)
    disc = tsub.add_parser("discover", parents=[common], help="list terminals found by mDNS")
    disc.add_argument("--timeout", type=float, default=5.0, help="seconds to listen")
    disc.set_defaults(func=cmd_discover)

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
    sim.add_argument("--cert-dir", default="var/simulator", help="keeps certificates stable")
    sim.add_argument("--for", dest="duration", type=float, default=0.0, help="stop after")
    sim.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    sim.set_defaults(func=cmd_simulate)


def _settings_from_args(args: Any) -> list[SimSettings]:
    """One SimSettings a simulated terminal, from ``edged simulate``'s options."""
    from edged.sim.terminal import SimSettings

    common = {
        "firmware": args.firmware,
        "rate": args.rate,
        "image_bytes": args.image_bytes,
        "reboot_seconds": args.reboot_seconds,
        "cert_dir": args.cert_dir,
        "event_dest": args.event_dest,
    }
    if args.from_config:
        cfg = config.load(getattr(args, "config", None))
        local = [t for t in cfg.terminals if t.host.startswith("127.") or t.host == "localhost"]
        if not local:
            from edged.errors import SimulatorError

            raise SimulatorError("no terminal with a loopback host in the configuration")
        return [
            SimSettings(
                serial=t.serial,
                host=t.host,
                port=t.port,
                username=t.username,
                password=terminals.password(t),
                **common,
            )
            for t in local
        ]
    head = args.serial.rstrip("0123456789")
    digits = args.serial[len(head) :] or "0"
    return [
        SimSettings(
            serial=f"{head}{int(digits) + i:0{len(digits)}d}",
            port=args.port + i if args.port else 0,
            username=args.username,
            password=args.password,
            **common,
        )
        for i in range(args.count)
    ]


async def simulate_main(args: Any) -> None:
    """Run simulated terminals until cancelled, or for ``args.duration`` seconds."""
    from edged.sim.terminal import SimulatedTerminal

    sims = [SimulatedTerminal(s) for s in _settings_from_args(args)]
    try:
        for sim in sims:
            await sim.start()
            s = sim.settings
            print(f"{s.serial}  {sim.url}  {s.username}/{s.password}  {sim.fingerprint}")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        end = loop.time() + args.duration if args.duration else None
        next_reboot = loop.time() + args.reboot_every if args.reboot_every else None
        while end is None or loop.time() < end:
            await asyncio.sleep(0.1)
            if next_reboot is not None and loop.time() >= next_reboot:
                for sim in sims:
                    log.info("simulator %s: rebooting", sim.settings.serial)
                    sim.reboot_soon()
                next_reboot = loop.time() + args.reboot_every
    finally:
        for sim in sims:
            await sim.stop()
