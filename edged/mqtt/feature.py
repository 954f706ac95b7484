"""MQTT as one feature: the link, the publisher, the states, the commands, Home Assistant.

Built by edged/ops/wiring.py when ``[mqtt]`` names a host, it hands back its :class:`Hooks`: a
service (start the link and the publishing thread; read the doors', modes' and terminals' states
on the loop and hand what changed to the publisher), a ``/readyz`` entry and a record listener
(a wake-up, nothing more: a broker that is down never delays a door). Commands arrive on paho's
thread, are checked there (edged/mqtt/commands.py) and carried out on the loop through the same
functions as the admin API's ``POST /api/v1/doors/{door}/{action}`` and ``POST /api/v1/modes``,
audited the same way (``door_log``, ``mode_changes``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import threading
import time
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

from edged import config
from edged.access import model as access
from edged.access import modes
from edged.clock import SYSTEM, Clock
from edged.decide.policy import SITE, Mode
from edged.doors import automation
from edged.doors.control import Doors
from edged.errors import DoorError, EdgedError, ModeError
from edged.hooks import Hooks
from edged.model import Event
from edged.mqtt import discovery, payloads
from edged.mqtt.commands import Command, CommandError, verify
from edged.mqtt.link import Link
from edged.mqtt.publisher import Publisher
from edged.store import events as store
from edged.store import mqttstate
from edged.store.events import Record, Store, Stored

log = logging.getLogger(__name__)

MAX_PENDING = 32  # commands waiting for the loop; past this a command is refused ("busy")
LOG_EVERY = 60.0  # s: a refusal reason is logged at most once in this time (counted always)
HA_SOURCE = "homeassistant@mqtt"
REFRESH_GAP = 0.1  # s at least between two looks at the states


class Mqtt:
    """The MQTT feature of one gateway (docs/mqtt.md)."""

    def __init__(
        self,
        cfg: config.Config,
        store: Store,
        *,
        doors: Doors | None = None,
        seen: dict[str, Any] | None = None,
        health: Any = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.cfg = cfg
        self.mq = cfg.mqtt
        self.store = store
        self.doors = doors
        self.seen = seen if seen is not None else {}
        self.health = health  # Reconcilers.health, when terminals are managed
        self.clock = clock
        self.tz = ZoneInfo(cfg.site.timezone)
        self.topics = payloads.Topics(cfg)
        self.secret = config.mqtt_command_secret(cfg) if self.mq.commands else b""
        self.readback = discovery.subscription(cfg, self.topics) if self.mq.homeassistant else None
        self.link = Link(
            self.mq,
            self.topics.client_id,
            self.topics.availability,
            self._message,
            self._subscriptions,
            password=config.mqtt_password(cfg),
        )
        self.publisher = Publisher(cfg, store, self.link, self.topics, self.readback)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state_wake: asyncio.Event | None = None
        self.refused: Counter[str] = Counter()
        self.accepted = 0
        self._pending = 0  # commands handed to the loop and not done (under _lock)
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}
        if self.mq.homeassistant:
            self.publisher.discovery(self._discovery(cfg))

    def hooks(self) -> Hooks:
        return Hooks(services=(self.service,), checks=(self.readiness,), listeners=(self.listener,))

    def reconfigure(self, cfg: config.Config) -> None:
        """A reload: discovery for the doors and terminals configured now (the broker settings
        and the command secret are read at start)."""
        self.cfg = dataclasses.replace(cfg, mqtt=self.mq)  # [mqtt] itself: at the next start
        if self.mq.homeassistant:
            self.publisher.discovery(self._discovery(self.cfg))

    def _discovery(self, cfg: config.Config) -> dict[str, bytes]:
        return {t: payloads.dumps(p) for t, p in discovery.entries(cfg, self.topics).items()}

    def _subscriptions(self) -> list[str]:
        subs = []
        if self.mq.commands:
            subs.append(self.topics.commands)
        if self.mq.homeassistant_commands:
            subs += [self.topics.ha_door_set, self.topics.ha_lockdown_set]
        if self.readback is not None:
            subs.append(self.readback)
        return subs

    # ----- the service (event loop) -----------------------------------------------------------

    async def service(self) -> None:
        """Run the link and the publisher; hand the states over while edged serves."""
        self.loop = asyncio.get_running_loop()
        self.state_wake = asyncio.Event()
        self.link.start()
        self.publisher.start()
        try:
            while True:
                self.state_wake.clear()
                self.refresh()
                await self.clock.wait(self.state_wake, self.mq.state_interval)
                await self.clock.sleep(REFRESH_GAP)  # a burst of records: one look, not many
        finally:
            self.publisher.stop()
            self.link.stop()

    def listener(self, event: Event, record: Record, stored: Stored) -> None:
        """A record was stored: wake the publisher and the state reader (never waits)."""
        self.publisher.notify()
        if self.state_wake is not None:
            self.state_wake.set()

    def refresh(self) -> None:
        """The doors', modes' and terminals' states now, to the publisher (retained)."""
        retain, topics = self.publisher.retain, self.topics
        lockdown = False
        if self.doors is not None:
            status = self.doors.status()
            lockdown = status["lockdown"]
            for door in status["doors"]:
                state = payloads.door_state(door, status["lockdown"], status["fire"])
                retain(topics.door(door["name"], "state"), payloads.dumps(state))
        try:
            current = modes.current(self.store.reader)
        except sqlite3.Error as exc:
            log.debug("mqtt: cannot read the modes: %s", exc)
        else:
            retain(topics.modes, payloads.dumps({"modes": current}))
            site = next((m for m in current if m["scope"] == SITE), None)
            lockdown = lockdown or bool(site and site["lockdown"])
        retain(topics.lockdown, b"ON" if lockdown else b"OFF")
        health = self.health() if self.health is not None else {}
        now = self.clock.time()
        timeout = self.cfg.reconciler.heartbeat_timeout
        for t in self.cfg.terminals:
            state = payloads.terminal_state(
                t.name, t.serial, self.seen.get(t.serial), health.get(t.serial), now, timeout
            )
            retain(topics.terminal(t.name), payloads.dumps(state))

    def readiness(self) -> tuple[str, bool, dict[str, Any]]:
        """The ``mqtt`` entry of /readyz: a broker that is down is shown, not a failure (doors
        work without it); only a publishing thread that stopped (a bug) fails it."""
        detail = self.publisher.status()
        try:
            detail.update(mqttstate.status(self.store.reader))
        except sqlite3.Error as exc:
            detail["store_error"] = str(exc)
        detail["commands"] = {"accepted": self.accepted, "refused": dict(self.refused)}
        started = self.publisher.started
        return "mqtt", not started or detail["publisher_alive"], detail

    # ----- commands (paho's thread, then the loop) --------------------------------------------

    def _message(self, topic: str, payload: bytes) -> None:
        if self.readback is not None and topic.startswith(self.mq.homeassistant_prefix + "/"):
            self.publisher.saw_discovery(topic, payload)
            return
        loop = self.loop
        if loop is None:
            return
        if topic == self.topics.commands and self.mq.commands:
            work = self._signed(payload)
        elif self.mq.homeassistant_commands:
            work = self._from_ha(topic, payload)
        else:
            return
        with self._lock:
            busy = self._pending >= MAX_PENDING
            if not busy:
                self._pending += 1
        if busy:
            work.close()
            self._refuse(CommandError("busy", "too many commands waiting"), topic)
            return
        asyncio.run_coroutine_threadsafe(work, loop)

    async def _signed(self, payload: bytes) -> None:
        """A signed command: verified, its nonce kept, carried out, answered."""
        try:
            now = self.clock.time()
            try:
                drives = set(self.doors.doors) if self.doors is not None else set()
                cmd = verify(payload, self.secret, now, drives, access.door_names(self.cfg))
                fresh = await self.store.run(lambda c: mqttstate.remember_nonce(c, cmd.nonce, now))
                if not fresh:
                    raise CommandError("replayed", "this nonce was accepted before", cmd.request_id)
                result = await self._carry_out(cmd)
            except CommandError as exc:
                self._refuse(exc, self.topics.commands)
                self._reply(
                    {"id": exc.request_id, "ok": False, "reason": exc.reason, "error": str(exc)}
                )
                return
            except EdgedError as exc:  # the store could not keep the nonce: nothing moved
                self._refuse(CommandError("unavailable", str(exc)), self.topics.commands)
                self._reply({"ok": False, "reason": "unavailable", "error": str(exc)})
                return
            self.accepted += 1
            self._reply({"id": cmd.request_id, "nonce": cmd.nonce, "ok": True, **result})
        finally:
            self._done()

    async def _carry_out(self, cmd: Command) -> dict[str, Any]:
        source = f"{cmd.by or 'command'}@mqtt"[:120]
        if cmd.door is not None and cmd.on is None:
            assert self.doors is not None  # verify() accepts only doors edged drives
            try:
                state = self.doors.command(cmd.door, cmd.action, source)
            except DoorError as exc:
                raise CommandError("refused", str(exc), cmd.request_id) from None
            return {
                "action": cmd.action,
                "door": payloads.door_state(state, self.doors.lockdown, self.doors.fire),
            }
        assert cmd.on is not None
        mode = await self._switch(cmd.door or SITE, cmd.action, cmd.on, source, cmd.request_id)
        return {"action": cmd.action, "mode": mode}

    async def _switch(
        self, scope: str, mode: str, on: bool, by: str, request_id: str | None
    ) -> dict[str, Any]:
        names = access.door_names(self.cfg)

        def work() -> Mode:
            conn = store.connect(self.store.path)
            try:
                return modes.switch(conn, scope, mode, on, by, doors=names)  # type: ignore[arg-type]
            finally:
                conn.close()

        try:
            switched = await asyncio.to_thread(work)
        except ModeError as exc:
            raise CommandError("refused", str(exc), request_id) from None
        if self.doors is not None:  # bring the doors to it now, as the admin API does
            try:
                automation.sync(self.doors, self.store.reader, self.tz, time.time())
            except sqlite3.Error as exc:
                log.error("modes: switched, but cannot read them back for the doors: %s", exc)
        if self.state_wake is not None:
            self.state_wake.set()
        return {
            "scope": switched.scope,
            "lockdown": switched.lockdown,
            "free_access": switched.free_access,
        }

    async def _from_ha(self, topic: str, payload: bytes) -> None:
        """Home Assistant's unsigned commands (only with ``mqtt.homeassistant_commands``)."""
        try:
            word = payload.decode("ascii", "replace").strip().upper()
            if topic == self.topics.ha_lockdown_set:
                if word not in ("ON", "OFF"):
                    raise CommandError("malformed", f"lockdown: {word[:16]!r} is not ON or OFF")
                await self._switch(SITE, "lockdown", word == "ON", HA_SOURCE, None)
                self.accepted += 1
                return
            prefix, suffix = f"{self.topics.prefix}/ha/doors/", "/set"
            door = topic[len(prefix) : -len(suffix)] if topic.startswith(prefix) else ""
            if self.doors is None or door not in self.doors.doors:
                raise CommandError("unknown-door", f"{door[:64]!r} is not a door edged drives")
            action = {"LOCK": "lock", "UNLOCK": "open", "OPEN": "open"}.get(word)
            if action is None:
                raise CommandError("malformed", f"{word[:16]!r} is not LOCK, UNLOCK or OPEN")
            try:
                self.doors.command(door, action, HA_SOURCE)
            except DoorError as exc:
                raise CommandError("refused", str(exc)) from None
            self.accepted += 1
            if self.state_wake is not None:
                self.state_wake.set()
        except CommandError as exc:
            self._refuse(exc, topic)
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    def _refuse(self, exc: CommandError, topic: str) -> None:
        self.refused[exc.reason] += 1
        now = time.monotonic()
        if now - self._logged.get(exc.reason, -LOG_EVERY) >= LOG_EVERY:
            self._logged[exc.reason] = now
            log.warning("mqtt: command on %s refused (%s): %s", topic, exc.reason, exc)
        else:
            log.debug("mqtt: command on %s refused (%s): %s", topic, exc.reason, exc)

    def _reply(self, answer: dict[str, Any]) -> None:
        answer["at"] = payloads.iso(self.clock.time())
        self.link.publish(self.topics.replies, payloads.dumps(answer), 1)
