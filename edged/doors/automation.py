"""Modes drive the hardware: site lockdown locks the doors down, free access holds them open.

The policy engine keeps modes as data (``edged mode ...``, the admin API). A switch reaches the
doors three ways: the admin API applies it (``sync``) before it answers, so ``edged mode`` with
the daemon running returns with the doors already switched; the daemon applies the file's modes
when it starts, before it serves (a switch written while it was down); and this loop re-reads
them every few seconds (free-access schedules, writes from elsewhere). One read per door
(indexed); holds and lockdown change only on a transition, so the door log records each change
once.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import tzinfo

from edged.access import lookup
from edged.clock import SYSTEM, Clock
from edged.decide.policy import SITE
from edged.doors.control import Doors

log = logging.getLogger(__name__)

FREE_ACCESS = "free-access"
INTERVAL = 2.0


def wanted(
    conn: sqlite3.Connection, doors: list[str], now: float, tz: tzinfo
) -> tuple[bool, set[str]]:
    """The site-wide lockdown flag, and the doors whose free access is active now."""
    site, _ = lookup.modes(conn, SITE)
    lockdown = bool(site and site.lockdown)
    free = {d for d in doors if lookup.free_access_now(conn, d, now, tz)}
    return lockdown, free


def apply(site: Doors, lockdown: bool, free: set[str]) -> None:
    """Bring the door driver to the wanted state; only transitions are acted on."""
    site.set_lockdown(lockdown, "mode:lockdown")
    for name, door in site.doors.items():
        holding = FREE_ACCESS in door.holds
        if name in free and not holding:
            site.hold(name, FREE_ACCESS)
        elif name not in free and holding:
            site.release(name, FREE_ACCESS)


def sync(site: Doors, conn: sqlite3.Connection, tz: tzinfo, now: float) -> None:
    """Read the modes in force at ``now`` and bring the doors to them (raises sqlite3.Error)."""
    lockdown, free = wanted(conn, list(site.doors), now, tz)
    apply(site, lockdown, free)


async def run(
    site: Doors,
    conn: sqlite3.Connection,
    tz: tzinfo,
    clock: Clock = SYSTEM,
    interval: float = INTERVAL,
) -> None:
    """Keep the doors in step with the modes until cancelled (at ``clock``'s wall time)."""
    failing = False
    while True:
        try:
            sync(site, conn, tz, clock.time())
            if failing:
                log.info("modes: reading modes works again")
            failing = False
        except sqlite3.Error as exc:
            if not failing:
                log.error("modes: cannot read modes, doors keep their state: %s", exc)
            failing = True
        await clock.sleep(interval)
