"""Helpers for door tests on gpiozero's MockFactory: the wiring, pins' levels, the door log."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from gpiozero import Device

from edged.clock import SYSTEM, Clock
from edged.config import Config
from edged.doors import control as doors
from edged.store import events as store
from tests.conftest import grant_person
from tests.timefix import FakeClock, turn

DOOR_SERIAL = "PS71HD01MC22C00099"
LOCK, CONTACT, REX, SIREN, FIRE = 17, 27, 22, 23, 24
UNLOCK, MAX_ON, HELD, BOUNCE, SOUND = 0.25, 0.6, 0.3, 0.02, 5.0

DOORS_TOML = """
[gpio]
pin_factory = "mock"

[[terminals]]
name = "lobby-door"
serial = "{serial}"
door = "lobby"

[[doors]]
name = "lobby"
lock = {{ pin = {lock}, active_high = {active_high}, kind = "{kind}" }}
unlock_time = {unlock}
max_unlock_time = {max_on}
contact = {{ pin = {contact}, bounce_time = {bounce} }}
held_open_time = {held}
rex = {{ pin = {rex}, bounce_time = {bounce} }}
alarm_actions = {{ tamper = "siren", fire = "release" }}

[siren]
pin = {siren}
sound_time = {sound}

[fire]
pin = {fire}
bounce_time = {bounce}
"""


def doors_toml(kind: str = "fail_secure", active_high: bool = True) -> str:
    return DOORS_TOML.format(
        serial=DOOR_SERIAL,
        lock=LOCK,
        active_high=str(active_high).lower(),
        kind=kind,
        unlock=UNLOCK,
        max_on=MAX_ON,
        contact=CONTACT,
        bounce=BOUNCE,
        held=HELD,
        rex=REX,
        siren=SIREN,
        sound=SOUND,
        fire=FIRE,
    )


def locked_level(kind: str, active_high: bool) -> bool:
    """The electrical level of 'locked': a strike is locked unpowered, a maglock powered."""
    energised = kind == "fail_safe"
    return energised == active_high


def pin(number: int) -> Any:
    assert Device.pin_factory is not None
    return Device.pin_factory.pin(number)


def drive(levels: tuple[tuple[int, bool], ...]) -> None:
    for number, level in levels:
        p = pin(number)
        p.drive_high() if level else p.drive_low()
        p.clear_states()


def wire_idle(lock_level: bool = False) -> None:
    """The level the wiring holds the lock line at before edged claims it."""
    drive(((LOCK, lock_level),))


def wire_inputs() -> None:
    """What the switches say once claimed (a mock pull-up wins over the wire until driven):
    door closed (contact to ground), exit button released, fire panel contact closed."""
    drive(((CONTACT, False), (REX, True), (FIRE, False)))


def build(cfg: Config, st: store.Store | None, clock: Clock = SYSTEM) -> doors.Doors:
    """The site's doors claimed, the switches wired, attached to the running loop."""
    site = doors.build(cfg, st, clock=clock)
    assert site is not None
    wire_inputs()
    site.attach(asyncio.get_running_loop())
    return site


def levels(number: int) -> list[bool]:
    return [bool(s.state) for s in pin(number).states]


def log_actions(path: Path, door: str = "lobby") -> list[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT action FROM door_log WHERE door = ? ORDER BY id", (door,))
        return [r[0] for r in rows]
    finally:
        conn.close()


def add_person(path: Path, pid: str = "e-1") -> None:
    grant_person(path, pid, door="lobby")


def flush(site: doors.Doors) -> None:
    """Wait for queued audit rows to reach the database."""
    audit = site.audit
    assert isinstance(audit, doors.AuditLog) and audit.store is not None
    deadline = time.monotonic() + 5
    while audit.store.stats.pending_items and time.monotonic() < deadline:
        time.sleep(0.005)


async def elapse(clock: FakeClock, seconds: float) -> None:
    """Let the loop take what is posted to it (a pin's edge), then move time on by ``seconds``."""
    await turn()
    clock.advance(seconds)
    await turn()
