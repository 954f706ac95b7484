"""Doors: live decisions, door inputs, fire input and operators turned into lock and siren states.

The decisions (what the lock should be, whether an opening is forced, how a timed unlock
extends) are pure functions in ``edged.doors.state``; this module keeps each door's state, drives
the outputs and sets the timers. Time comes from the ``Clock`` passed in (``edged.clock``).

Threading: every door's state lives on the asyncio event loop. gpiozero's input callbacks only post
to the loop (``gpio.Input``), the receiver calls its listeners on the loop, the admin API runs on
it, and every timer is a ``Clock.call_later`` handle on the loop. The one exception is the max-on
guard (``gpio.Guard``): a thread that may force an output quiet on its own, then posts the news to
the loop. Each door's lock level is recomputed from its state (``Door.desired``) after every change,
never toggled, so no sequence of events can leave a stale level behind.

Audit: every door event goes to the ``door_log`` table (migration 3) and to the log. The opening
for a grant is on disk before the lock moves: the door's answer is taken just before the record's
commit (``Doors.plan``) and its row rides in that commit, with the record's door outcome
(migration 10); the lock moves after the commit. Other rows go through the store's writer thread
without waiting for the commit (an exit button or a fire release must not wait for a disk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edged.clock import SYSTEM, Clock, Timer
from edged.config import ALARM_CODES, Config, DoorConfig, FireConfig, InputConfig, SirenConfig
from edged.doors import gpio, state
from edged.doors.state import FIRE
from edged.errors import DoorError, EdgedError, GpioError
from edged.model import Event, Kind
from edged.store import doorlog
from edged.store.events import Record, Store, Stored

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # s between input level checks (catches edges a backend lost)
PRUNE_INTERVAL = 3600.0
COMMANDS = ("open", "hold", "release", "lock")
UNLOCKED = "unlocked"  # a record's door outcome when its door carried the grant out

Audit = Callable[[str, str, str, dict[str, Any]], None]


class AuditLog:
    """Door events into ``door_log`` (via the store's writer, not waited for) and the log."""

    def __init__(self, store: Store | None, clock: Clock = SYSTEM) -> None:
        self.store = store
        self.clock = clock
        self.failed = 0

    def __call__(self, door: str, action: str, source: str, detail: dict[str, Any]) -> None:
        """Record one door event."""
        at = self.clock.time()
        say(door, action, source, detail)
        if self.store is None:
            return
        row = (at, door, action, source, json.dumps(detail, separators=(",", ":")))
        try:
            self.store.submit_nowait(lambda conn: doorlog.insert(conn, row))
        except EdgedError as exc:
            self.failed += 1
            log.error("door audit: cannot queue %s/%s: %s", door, action, exc)

    def outcome(self, event_id: int, outcome: str) -> None:
        """Correct a stored record's door outcome (the door refused after its commit)."""
        if self.store is None:
            return
        try:
            self.store.note_door_outcome(event_id, outcome)
        except EdgedError as exc:
            self.failed += 1
            log.error("door audit: cannot queue the outcome of event %d: %s", event_id, exc)

    async def prune(self, older_than: float) -> int:
        """Delete door events older than ``older_than`` (epoch seconds)."""
        if self.store is None:
            return 0
        return int(await self.store.run(lambda conn: doorlog.prune(conn, older_than)))


def say(door: str, action: str, source: str, detail: dict[str, Any]) -> None:
    """Log one door event at INFO (its row is, or goes, to the database separately)."""
    extra = f" {json.dumps(detail, separators=(',', ':'))}" if detail else ""
    log.info("door %s: %s by %s%s", door or "*", action, source, extra)


@dataclass
class Alarm:
    """A raised alarm on a door: the gateway's own or a terminal's (by trace_id)."""

    kind: str
    source: str
    since: float
    detail: dict[str, Any] = field(default_factory=dict)


class Siren:
    """The site siren: sounds while any source wants it, at most ``sound_time`` a trigger."""

    def __init__(self, cfg: SirenConfig, factory: Any, site: Doors) -> None:
        self.cfg = cfg
        self.site = site
        self.sources: set[str] = set()
        self._timer: Timer | None = None
        self.output: gpio.Output | None = None
        if cfg.pin is not None:
            self.output = gpio.Output(
                "siren",
                cfg.pin,
                cfg.active_high,
                False,
                factory,
                limit=cfg.sound_time + 1.0,
                clock=site.clock,
            )

    @property
    def sounding(self) -> bool:
        """The siren output is on (or would be, when no siren is fitted)."""
        return bool(self.sources)

    def sound(self, key: str) -> None:
        """Sound for this source; restarts the sounding time."""
        self.sources.add(key)
        if self.output is not None and self.output.set(True, key):
            self.site.audit("", "siren_on", key, {})
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.site.call_later(self.cfg.sound_time, self._timeout)

    def clear(self, key: str) -> None:
        """This source no longer wants the siren; silent when none does."""
        self.sources.discard(key)
        if not self.sources:
            self.silence("cleared")

    def silence(self, why: str) -> None:
        """Silence now, whoever asked for it."""
        self.sources.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.output is not None and self.output.set(False, why):
            self.site.audit("", "siren_off", why, {})

    def _timeout(self) -> None:
        self._timer = None
        self.silence("sound_time")

    def close(self) -> None:
        """Silence and release the pin."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sources.clear()
        if self.output is not None:
            self.output.close()


# Opens a door through a terminal's relay: (terminal name, open_mode).
Relay = Callable[[str, int], Awaitable[None]]


class RelayLock:
    """The lock of a door opened only through a terminal's relay: no pin, state only."""

    pin = None
    level = "relay"

    def __init__(self, label: str) -> None:
        self.label = label
        self.on = False
        self.changed_at = time.perf_counter()

    def hold(self, held: bool) -> None:
        """No max-on guard for a relay: the terminal times its own openings."""

    def set(self, on: bool, why: str) -> bool:
        """Record the state; returns whether it changed."""
        if on == self.on:
            return False
        self.on = on
        self.changed_at = time.perf_counter()
        return True

    def close(self) -> None:
        """Nothing to release."""
        self.on = False


class Door:
    """One door: its lock output, optional contact and exit button, holds, pulses and alarms."""

    def __init__(self, cfg: DoorConfig, factory: Any, site: Doors) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.site = site
        self.holds: dict[str, str] = {}  # key -> who
        self.alarms: dict[str, Alarm] = {}
        self.pulse_end: float | None = None  # monotonic end of a timed unlock
        self.pulse_kind: str | None = None  # grant, egress, manual
        self.shunt_until = 0.0
        self.opened_in_pulse = False
        self.last_decision: dict[str, Any] | None = None
        self.why = "start"
        self._pulse_timer: Timer | None = None
        self._held_timer: Timer | None = None
        fail_safe = cfg.lock.kind == "fail_safe"  # a maglock is locked while energised
        self.lock: gpio.Output | RelayLock
        if cfg.lock.pin is None:  # opened only through a terminal's relay
            self.lock = RelayLock(f"door {self.name} (terminal {cfg.terminal_relay}'s relay)")
        else:
            self.lock = gpio.Output(
                f"door {self.name} lock",
                cfg.lock.pin,
                cfg.lock.active_high,
                fail_safe,
                factory,
                limit=cfg.max_unlock_time,
                clock=site.clock,
            )
        self.contact: gpio.Input | None = None
        self.rex: gpio.Input | None = None
        try:
            label = f"door {self.name}"
            clock = site.clock
            self.contact = _input(
                f"{label} contact", cfg.contact, factory, self.contact_changed, clock
            )
            self.rex = _input(f"{label} exit button", cfg.rex, factory, self.rex_changed, clock)
        except GpioError:
            self.close()
            raise

    # ----- the lock level -------------------------------------------------------------------

    def situation(self) -> state.Situation:
        """What the lock level depends on now, as plain values."""
        pulse = None if self.pulse_end is None else self.pulse_kind or "pulse"
        site = self.site
        return state.Situation.of(
            site.fire, self.cfg.fire_release, site.lockdown, self.holds, pulse
        )

    def desired(self) -> tuple[bool, str]:
        """Whether the lock should be open now, and why."""
        return state.lock(self.situation())

    def held(self) -> bool:
        """A hold (fire, free access, manual, terminal alarm) allows open past the limit."""
        return state.held(self.situation())

    def apply(self) -> None:
        """Drive the lock to the level the state asks for (and the terminal's relay, if any)."""
        on, why = self.desired()
        held = self.held()
        self.lock.hold(held)
        before = self.why
        if self.lock.set(on, why):
            self.why = why
            self.site.audit(self.name, "unlock" if on else "lock", why, {})
            if self.cfg.terminal_relay:
                mode = state.relay_mode(on, held, state.is_hold(before))
                if mode is not None:
                    self.site.send_relay(self, mode, why)

    # ----- timed unlocks --------------------------------------------------------------------

    def pulse(self, kind: str, duration: float | None = None) -> None:
        """Unlock for ``duration`` (default: unlock_time), extending a running unlock."""
        now = self.site.clock.monotonic()
        length = duration if duration is not None else self.cfg.unlock_time
        got = state.extend(now, length, kind, self.pulse_end, self.pulse_kind, self.shunt_until)
        if got.rearm:
            self.pulse_end, self.pulse_kind = got.end, got.kind
            if self._pulse_timer is not None:
                self._pulse_timer.cancel()
            self._pulse_timer = self.site.call_later(got.end - now, self._pulse_over)
        self.shunt_until = got.shunt_until
        self.apply()

    def end_pulse(self) -> None:
        """End a timed unlock now."""
        if self._pulse_timer is not None:
            self._pulse_timer.cancel()
            self._pulse_timer = None
        self.pulse_end = self.pulse_kind = None
        self.apply()

    def _pulse_over(self) -> None:
        self._pulse_timer = None
        self.pulse_end = self.pulse_kind = None
        self.apply()

    def refusal(self) -> str | None:
        """Why this door would refuse a grant now; None: it would unlock."""
        return state.refusal(self.situation())

    def grant(self, source: str, detail: dict[str, Any]) -> bool:
        """A live, granted decision: unlock for unlock_time (refused under lockdown)."""
        why = self.refusal()
        if why is not None:
            self.site.audit(self.name, "grant_refused", source, {**detail, "why": why})
            return False
        self.site.audit(self.name, "grant", source, detail)
        self.pulse("grant")
        return True

    # ----- inputs ---------------------------------------------------------------------------

    def rex_changed(self, pressed: bool) -> None:
        """The exit button: a press unlocks for egress (also under lockdown)."""
        if pressed:
            self.site.audit(self.name, "egress", "rex", {})
            self.pulse("egress")

    def contact_changed(self, closed: bool) -> None:
        """The door contact settled: open (authorised or forced) or closed."""
        if closed:
            self._door_closed()
            return
        now = self.site.clock.monotonic()
        if not state.authorised_opening(self.lock.on, now, self.shunt_until):
            self.raise_alarm("forced", "forced", "contact", siren=True)
            return
        self.opened_in_pulse = self.pulse_end is not None
        self.site.audit(self.name, "opened", "contact", {"why": self.why})
        if not self.held():
            self._held_timer = self.site.call_later(self.cfg.held_open_time, self._held_too_long)

    def _door_closed(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self.site.audit(self.name, "closed", "contact", {})
        for key in ("forced", "held_open"):
            self.clear_alarm(key, "contact")
        pulsing = self.pulse_end is not None
        if state.relock_on_close(self.cfg.relock_on_close, self.opened_in_pulse, pulsing):
            self.shunt_until = 0.0
            self.end_pulse()
        self.opened_in_pulse = False

    def _held_too_long(self) -> None:
        self._held_timer = None
        if self.contact is not None and not self.contact.stable:
            self.raise_alarm("held_open", "held_open", "contact", siren=False)

    @property
    def contact_state(self) -> str | None:
        """``open``, ``closed`` or None without a contact."""
        if self.contact is None:
            return None
        return "closed" if self.contact.stable else "open"

    # ----- alarms ---------------------------------------------------------------------------

    def raise_alarm(
        self, key: str, kind: str, source: str, siren: bool, detail: dict[str, Any] | None = None
    ) -> None:
        """Raise an alarm once (by key), audited; optionally sound the siren."""
        if key in self.alarms:
            return
        self.alarms[key] = Alarm(kind, source, self.site.clock.time(), detail or {})
        log.warning("door %s: alarm %s (%s)", self.name, kind, source)
        self.site.audit(self.name, "alarm", source, {"alarm": kind, **(detail or {})})
        if siren:
            self.site.siren.sound(f"{self.name}:{key}")

    def clear_alarm(self, key: str, source: str) -> bool:
        """Clear an alarm by key; returns whether it was raised."""
        alarm = self.alarms.pop(key, None)
        if alarm is None:
            return False
        self.site.audit(self.name, "alarm_cleared", source, {"alarm": alarm.kind})
        self.site.siren.clear(f"{self.name}:{key}")
        return True

    def terminal_alarm(self, event: Event, terminal: str) -> None:
        """A terminal's alarm push (type 1): act on raise (1), undo on clear (3) by trace_id."""
        code, status, trace = event.alarm_code, event.alarm_status, event.trace_id
        names = [n for n, c in ALARM_CODES.items() if c == code]
        kind = f"terminal:{names[0] if names else code}"
        action = self.cfg.alarm_action(code)
        source = f"terminal:{terminal}"
        detail = {"code": code, "trace_id": trace, "action": action}
        key = f"{FIRE if names == ['fire'] else 'terminal'}:{event.serial}:{trace}"
        if status == 1 and not trace:
            # no trace_id: the clear cannot be matched, so nothing may stay held
            self.site.audit(self.name, "alarm", source, {"alarm": kind, **detail})
            if action == "siren":
                self.site.siren.sound(f"{self.name}:{kind}")
        elif status == 1:
            self.raise_alarm(key, kind, source, action == "siren", detail)
            if action == "release" and key not in self.holds:
                self.holds[key] = source
                self.apply()
        elif status == 3:
            if not self.clear_alarm(key, source):
                self.site.audit(self.name, "alarm_cleared", source, {"alarm": kind, **detail})
            if self.holds.pop(key, None) is not None:
                self.apply()
        else:
            self.site.audit(self.name, "alarm_status", source, {"status": status, **detail})

    # ----- holds and manual commands --------------------------------------------------------

    def hold(self, key: str, source: str) -> None:
        """Keep unlocked while this hold lasts (not under lockdown, unless it is a fire hold)."""
        self.holds[key] = source
        self.site.audit(self.name, "hold", source, {"hold": key})
        self.apply()

    def release(self, key: str, source: str) -> None:
        """End a hold."""
        if self.holds.pop(key, None) is not None:
            self.site.audit(self.name, "release", source, {"hold": key})
            self.apply()

    def command(self, action: str, source: str) -> None:
        """A manual command: open (timed), hold, release (the manual hold) or lock (now)."""
        if action == "open":
            if self.refusal() is not None:
                self.site.audit(self.name, "open_refused", source, {"why": "lockdown"})
                raise DoorError(f"door {self.name}: lockdown is on")
            self.site.audit(self.name, "open", source, {})
            self.pulse("manual")
        elif action == "hold":
            self.hold("manual", source)
        elif action == "release":
            self.release("manual", source)
        elif action == "lock":
            self.site.audit(self.name, "lock_now", source, {"holds": sorted(self.holds)})
            self.holds.clear()
            self.end_pulse()
        else:
            raise DoorError(f"unknown door command {action!r} ({', '.join(COMMANDS)})")

    def status(self) -> dict[str, Any]:
        """The door's state for the admin API and ``edged status``."""
        now = self.site.clock.monotonic()
        return {
            "name": self.name,
            "kind": self.cfg.lock.kind,
            "locked": not self.lock.on,
            "why": self.why,
            "output": self.lock.level,
            "pin": self.lock.pin,
            "unlock_remaining": state.remaining(self.pulse_end, now),
            "holds": dict(self.holds),
            "contact": self.contact_state,
            "alarms": [
                {"key": k, "kind": a.kind, "source": a.source, "since": a.since, **a.detail}
                for k, a in self.alarms.items()
            ],
            "last_decision": self.last_decision,
            "fire_release": self.cfg.fire_release,
        }

    def close(self) -> None:
        """Cancel timers, release inputs, return the lock to locked and release its pin."""
        for timer in (self._pulse_timer, self._held_timer):
            if timer is not None:
                timer.cancel()
        self._pulse_timer = self._held_timer = None
        for device in (self.contact, self.rex):
            if device is not None:
                device.close()
        self.lock.close()


class Doors:
    """Every door, the siren and the fire input of one site."""

    def __init__(
        self,
        cfg: Config,
        factory: Any,
        audit: Audit,
        *,
        relay: Relay | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.cfg = cfg
        self.factory = factory
        self.audit = audit
        self.clock = clock
        self.fire = False
        self.lockdown = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.doors: dict[str, Door] = {}
        self.fire_input: gpio.Input | None = None
        self.guard = gpio.Guard(self._guard_tripped, clock=clock)
        try:
            self.siren = Siren(cfg.siren, factory, self)
            for door_cfg in cfg.doors:
                self.doors[door_cfg.name] = Door(door_cfg, factory, self)
            self.fire_input = _input("fire input", cfg.fire, factory, self._fire_changed, clock)
        except GpioError:
            self.close()
            raise
        self.guard.outputs = [
            d.lock for d in self.doors.values() if isinstance(d.lock, gpio.Output)
        ]
        # When terminals are managed (edged/ops/wiring.py): opens a door through a terminal's relay.
        self.relay = relay
        self._relay_tasks: set[asyncio.Task[None]] = set()
        if self.siren.output is not None:
            self.guard.outputs.append(self.siren.output)

    def send_relay(self, door: Door, mode: int, why: str) -> None:
        """Command the terminal relay of ``door`` (in the background; failures are audited)."""
        terminal = door.cfg.terminal_relay
        if self.relay is None or self.loop is None:
            self.audit(door.name, "relay_skipped", terminal, {"open_mode": mode, "why": why})
            return
        task = self.loop.create_task(self._relay(door.name, terminal, mode, why))
        self._relay_tasks.add(task)
        task.add_done_callback(self._relay_tasks.discard)

    async def _relay(self, door: str, terminal: str, mode: int, why: str) -> None:
        assert self.relay is not None
        detail = {"open_mode": mode, "why": why}
        try:
            await self.relay(terminal, mode)
        except Exception as exc:
            log.error("door %s: terminal %s relay failed: %s", door, terminal, exc)
            self.audit(door, "relay_failed", terminal, {**detail, "error": str(exc)})
            return
        self.audit(door, "relay", terminal, detail)

    def door(self, name: str) -> Door:
        """The door of this name; DoorError if none is configured."""
        door = self.doors.get(name)
        if door is None:
            known = ", ".join(self.doors) or "none configured"
            raise DoorError(f"no door named {name!r} ({known})")
        return door

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """A timer on the doors' loop."""
        if self.loop is None:  # an event before the service attached: use the caller's loop
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                raise DoorError("doors are not attached to an event loop yet") from None
        return self.clock.call_later(self.loop, delay, callback)

    # ----- life cycle -----------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start: read the inputs, react to their edges on ``loop``, start the guard."""
        self.loop = loop
        inputs = [self.fire_input] + [i for d in self.doors.values() for i in (d.contact, d.rex)]
        for device in inputs:
            if device is not None:
                device.attach(loop)
        self.guard.start()
        detail: dict[str, Any] = {"factory": gpio.factory_name(self.factory)}
        detail["contacts"] = {n: d.contact_state for n, d in self.doors.items() if d.contact}
        self.audit("", "start", "edged", detail)
        if self.fire_input is not None and self._fire_level(self.fire_input.stable):
            self._fire_changed(self.fire_input.stable)

    async def service(self, daemon: Any = None) -> None:
        """The daemon service: attach, poll inputs, prune the door log; close on cancel."""
        self.attach(asyncio.get_running_loop())
        retention = self.cfg.storage.retention_days * 86400
        clock = self.clock
        next_prune = clock.monotonic()
        try:
            while True:
                await clock.sleep(POLL_INTERVAL)
                self.poll()
                if clock.monotonic() >= next_prune and isinstance(self.audit, AuditLog):
                    next_prune = clock.monotonic() + PRUNE_INTERVAL
                    try:
                        await self.audit.prune(clock.time() - retention)
                    except EdgedError as exc:
                        log.error("door log retention: %s", exc)
        finally:
            self.close()

    def poll(self) -> None:
        """Re-read every input's level (a lost edge is caught within POLL_INTERVAL)."""
        for door in self.doors.values():
            for device in (door.contact, door.rex):
                if device is not None:
                    device.poll()
        if self.fire_input is not None:
            self.fire_input.poll()

    def close(self) -> None:
        """Stop: every lock back to locked, the siren silent, every pin released."""
        if self.closed:
            return
        self.closed = True
        self.guard.stop()
        for door in self.doors.values():
            door.close()
        if hasattr(self, "siren"):
            self.siren.close()
        if self.fire_input is not None:
            self.fire_input.close()
        self.audit("", "stop", "edged", {})

    def readiness(self) -> tuple[str, bool, dict[str, Any]]:
        """The ``doors`` entry of /readyz: the guard must run while edged serves."""
        ok = not self.closed and (self.loop is None or self.guard.alive)
        return (
            "doors",
            ok,
            {
                "factory": gpio.factory_name(self.factory),
                "fire": self.fire,
                "lockdown": self.lockdown,
                "guard_trips": self.guard.trips,
            },
        )

    # ----- site-wide states -----------------------------------------------------------------

    def _fire_level(self, active: bool) -> bool:
        high = active != self.cfg.fire.pull_up
        return high == self.cfg.fire.active_high

    def _fire_changed(self, active: bool) -> None:
        fire = self._fire_level(active)
        if fire == self.fire:
            return
        self.fire = fire
        if fire:
            log.warning("fire input active: releasing every fire-release door")
        self.audit("", "fire_on" if fire else "fire_off", "fire-input", {})
        self.apply_all()

    def set_lockdown(self, on: bool, source: str) -> None:
        """Lockdown: grants, holds and manual opens are refused; fire and egress still open."""
        if on == self.lockdown:
            return
        self.lockdown = on
        self.audit("", "lockdown_on" if on else "lockdown_off", source, {})
        self.apply_all()

    def hold(self, door: str, source: str) -> None:
        """Keep a door unlocked on behalf of ``source`` (e.g. a free-access schedule)."""
        self.door(door).hold(source, source)

    def release(self, door: str, source: str) -> None:
        """End ``source``'s hold on a door."""
        self.door(door).release(source, source)

    def command(self, door: str, action: str, source: str) -> dict[str, Any]:
        """A manual command on a door; returns the door's state after it."""
        target = self.door(door)
        target.command(action, source)
        return target.status()

    def apply_all(self) -> None:
        """Recompute every lock."""
        for door in self.doors.values():
            door.apply()

    def status(self) -> dict[str, Any]:
        """Every door and the site-wide states."""
        return {
            "doors": [d.status() for d in self.doors.values()],
            "fire": self.fire,
            "lockdown": self.lockdown,
            "siren": self.siren.sounding,
            "pin_factory": gpio.factory_name(self.factory),
        }

    # ----- what the terminals say -----------------------------------------------------------

    def _door_of(self, record: Record) -> tuple[Door, str] | None:
        """The door a live record from a door's terminal acts on, and the terminal's name."""
        if record.replay is not None or self.closed:
            return None
        terminal = self.cfg.terminal_by_serial(record.event.serial)
        # The door the record was decided for (terminals[].door, else the terminal's name).
        if terminal is None or record.door not in self.doors:
            return None
        return self.doors[record.door], terminal.name

    def _grant_of(self, record: Record) -> tuple[Door, str, dict[str, Any]] | None:
        """The door a live record asks to open, the source and detail of its door-log row."""
        found = self._door_of(record)
        if found is None:
            return None
        door, terminal = found
        event = record.event
        if event.kind is Kind.AUTH and record.decision == "pass":
            return door, f"terminal:{terminal}", {"person": record.person_id}
        pushed = event.kind is Kind.RECOGNITION and event.terminal_pass
        if pushed and door.cfg.open_on_terminal_pass:
            return door, f"terminal:{terminal}:pass", {}
        return None

    def plan(self, record: Record) -> None:
        """Before a record's commit: what its door does with it, to ride in the same commit.

        The door's answer now (unlock, or refuse and why) becomes the record's door outcome and a
        door-log row of the record's transaction (the writer adds the event's id), so a grant's
        opening is on disk before the lock moves. The store calls this (``before_commit``).
        """
        found = self._grant_of(record)
        if found is None:
            return
        door, source, detail = found
        why = door.refusal()
        if why is None:
            record.door_outcome = UNLOCKED
            record.door_log = [(self.clock.time(), door.name, "grant", source, detail)]
        else:
            record.door_outcome = f"refused: {why}"
            row = (self.clock.time(), door.name, "grant_refused", source, {**detail, "why": why})
            record.door_log = [row]

    def on_record(self, event: Event, record: Record, stored: Stored) -> None:
        """The receiver's listener: only live, first-seen records from a door's terminal act."""
        if stored.duplicate or stored.replayed:
            return
        found = self._door_of(record)
        if found is None:
            if self.closed and record.door_outcome == UNLOCKED:  # stopped while it committed
                for _, name, _, source, detail in record.door_log:
                    self._refused_late(name, source, {**detail, "event": stored.id}, "stopped")
            return
        door, terminal = found
        if event.kind is Kind.ALARM:
            door.terminal_alarm(event, terminal)
            return
        if self._grant_of(record) is None:
            if event.kind is Kind.AUTH:
                door.last_decision = _decision(record, stored, terminal)
            return
        door.last_decision = _decision(record, stored, terminal)
        committed = record.door_outcome is not None
        if not committed:  # stored without the planning hook: decide now, rows queued
            self.plan(record)
        for _, _, action, source, detail in record.door_log:
            row = {**detail, "event": stored.id}
            self._carry_out(door, action, source, row, committed)

    def _carry_out(
        self,
        door: Door,
        action: str,
        source: str,
        detail: dict[str, Any],
        committed: bool,
    ) -> None:
        """Do what a record's door-log row says (``committed``: the row is on disk already)."""
        record_row = say if committed else self.audit
        if action != "grant":
            record_row(door.name, action, source, detail)
            return
        why = door.refusal()
        if why is not None:  # the door changed between the plan and the commit (lockdown on)
            self._refused_late(door.name, source, detail, why)
            return
        record_row(door.name, action, source, detail)
        door.pulse("grant")

    def _refused_late(self, door: str, source: str, detail: dict[str, Any], why: str) -> None:
        """A committed grant the door did not carry out: a second row, the outcome corrected."""
        self.audit(door, "grant_refused", source, {**detail, "why": why})
        if isinstance(self.audit, AuditLog):
            self.audit.outcome(int(detail["event"]), f"refused: {why}")

    def _guard_tripped(self, output: gpio.Output) -> None:  # the guard thread
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._after_trip, output)

    def _after_trip(self, output: gpio.Output) -> None:
        limit = output.limit
        if self.siren.output is output:
            self.audit("", "guard_trip", "guard", {"output": "siren", "limit": limit})
            self.siren.silence("guard")
            return
        for door in self.doors.values():
            if door.lock is output:
                self.audit(door.name, "guard_trip", "guard", {"limit": limit, "why": door.why})
                door.why = "guard"
                door.end_pulse()


def _decision(record: Record, stored: Stored, terminal: str) -> dict[str, Any]:
    return {
        "at": record.received_at,
        "event": stored.id,
        "terminal": terminal,
        "decision": record.decision or ("pass" if record.event.terminal_pass else None),
        "reason": record.reason,
        "person": record.person_id,
    }


def build(
    cfg: Config, store: Store | None, *, relay: Relay | None = None, clock: Clock = SYSTEM
) -> Doors | None:
    """Claim every door output at its locked level (None when no door, siren or fire is set)."""
    if not cfg.doors and cfg.siren.pin is None and cfg.fire.pin is None:
        return None
    factory = gpio.choose_factory(cfg.gpio.pin_factory, cfg.gpio.chip)
    site = Doors(cfg, factory, AuditLog(store, clock), relay=relay, clock=clock)
    if store is not None:
        store.before_commit.append(site.plan)
    return site


def _input(
    label: str,
    wiring: InputConfig | FireConfig,
    factory: Any,
    on_change: Callable[[bool], None],
    clock: Clock = SYSTEM,
) -> gpio.Input | None:
    """The debounced input ``wiring`` describes; None when it has no pin (not fitted)."""
    if wiring.pin is None:
        return None
    return gpio.Input(
        label, wiring.pin, wiring.pull_up, wiring.bounce_time, factory, on_change, clock
    )
