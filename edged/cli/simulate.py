"""``edged simulate``: simulated terminals on loopback, for a laptop or a commissioning dry run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from edged import config
from edged.terminals import client as terminals

if TYPE_CHECKING:
    from edged.sim.terminal import SimSettings

log = logging.getLogger(__name__)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run simulated terminals on loopback until interrupted (or for --for seconds)."""
    from edged import logs

    logs.setup(args.log_level, "text")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(simulate_main(args))
    return 0


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
        "skew": args.clock_skew,
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
