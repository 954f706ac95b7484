"""Modes drive the hardware: site lockdown locks the doors down, free access holds them open.

The policy engine keeps modes as data (``edged mode ...``, the admin API); this loop reads them
every few seconds and tells the door driver. One read per door (indexed); holds and lockdown
change only on a transition, so the door log records each change once.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import tzinfo

from edged import cache
from edged.doors import Doors
from edged.policy import SITE

log = logging.getLogger(__name__)

FREE_ACCESS = "free-access"
INTERVAL = 2.0


def wanted(
    conn: sqlite3.Connection, doors: list[str], now: float, tz: tzinfo
) -> tuple[bool, set[str]]:
    """The site-wide lockdown flag, and the doors whose free access is active now."""
    site, _ = cache.modes(conn, SITE)
    lockdown = bool(site and site.lockdown)
    free = {d for d in doors if cache.free_access_now(conn, d, now, tz)}
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


async def run(
    site: Doors,
    conn: sqlite3.Connection,
    tz: tzinfo,
    clock: Callable[[], float] = time.time,
    interval: float = INTERVAL,
) -> None:
    """Keep the doors in step with the modes until cancelled."""
    failing = False
    while True:
        try:
            lockdown, free = wanted(conn, list(site.doors), clock(), tz)
            apply(site, lockdown, free)
            if failing:
                log.info("modes: reading modes works again")
            failing = False
        except sqlite3.Error as exc:
            if not failing:
                log.error("modes: cannot read modes, doors keep their state: %s", exc)
            failing = True
        await asyncio.sleep(interval)
