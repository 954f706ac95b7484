"""Keep every managed terminal registered: one task per terminal, its own retry state.

A reconcile is: log in, read device info (the serial must match), read the push registration,
write ``{event_dest, enabled}`` when it differs or cannot be read, optionally set remote
authentication by read-modify-write of ``/v1/device/functions``, verify, check the terminal's
clock (``clocksync``) and settings (``settings``), back-fill a gap. It is
retried with exponential backoff and full jitter (capped), forever; cancellation goes through.
Between reconciles the task watches: a ping every ``probe_interval`` (failing then answering
means a reboot), missing heartbeats, the first push after a silence, a DST change of the site's
offset (with ``[terminal_clock]``), a periodic check, and
on-demand requests (``edged terminals resubscribe``). Logs: one ERROR when a terminal goes down,
one INFO when it is back, per-attempt detail at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never
from tenacity.wait import wait_random_exponential

from edged.clock import SYSTEM, Clock
from edged.config import Config, TerminalConfig
from edged.errors import TerminalAuthError, TerminalError, TerminalMismatch, TerminalUntrusted
from edged.hooks import Hooks
from edged.receive.receiver import TerminalSeen
from edged.store import presence
from edged.store.events import Store
from edged.terminals import backfill
from edged.terminals import client as terminals
from edged.terminals import settings as desired
from edged.terminals.clocksync import ClockSync

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
GAP_MARGIN = 120.0  # seconds re-read before the last covered moment (clocks, in-flight pushes)


@dataclass
class Health:
    """What edged knows about one managed terminal (shown by the admin API and `edged status`)."""

    name: str
    serial: str
    state: str = "starting"  # registered, down, untrusted, serial-mismatch, refused
    # confirmed (read back), asserted (written, the firmware cannot say), unknown (not reachable),
    # lost (a reboot or drift took it; being restored), untrusted (edged will not call it)
    registration: str = "unknown"
    event_dest: str | None = None
    auth_mode: int | None = None
    last_error: str | None = None
    last_ok: float | None = None
    last_attempt: float | None = None
    since: float | None = None
    attempts: int = 0
    registrations: int = 0
    backfilled: int = 0
    presented_fingerprint: str | None = None
    device: dict[str, Any] = field(default_factory=dict)


def _state_of(exc: BaseException) -> str:
    if isinstance(exc, TerminalUntrusted):
        return "untrusted"
    if isinstance(exc, TerminalMismatch):
        return "serial-mismatch"
    if isinstance(exc, TerminalAuthError):
        return "refused"
    return "down"


class TerminalReconciler:
    """The task keeping one terminal registered and watched."""

    def __init__(
        self,
        cfg: Config,
        terminal: TerminalConfig,
        store: Store,
        seen: dict[str, TerminalSeen],
        sleep: Sleep | None = None,
        clock: Clock = SYSTEM,
        plausible: Callable[[float], bool] | None = None,
        on_reconciled: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.terminal = terminal
        self.on_reconciled = on_reconciled  # the people sync follows (terminals/peoplesync.py)
        self.store = store
        self.seen = seen
        self.clock = clock
        self.sleep: Sleep = sleep or self._backoff_sleep
        self.health = Health(terminal.name, terminal.serial)
        self.event_dest = cfg.gateway.url(cfg.receiver.event_path)
        self.auth_url = cfg.gateway.url(cfg.receiver.auth_path)
        self.client: terminals.TerminalClient | None = None
        self.wake = asyncio.Event()
        self.reason: str | None = None
        self._down = False
        self._gap = True  # back-fill at the first success (edged may have been stopped)
        self._last_push: float | None = None
        self._beat_alarm = False
        self._stopped = False
        # the terminal's clock and settings, checked at every reconcile (their own modules)
        self.clock_sync = ClockSync(cfg, terminal.name, clock, plausible)
        self.settings_sync = desired.SettingsSync(cfg, terminal, clock)

    def stop(self) -> None:
        """Ask the task to end (cancel it as well).

        The flag backs up cancellation: anyio 3.x (bookworm) can swallow a cancellation that
        meets one of its own deadlines; the task then honours the flag at its next loop turn.
        """
        self._stopped = True
        self.wake.set()

    def _honour_stop(self) -> None:
        if self._stopped:
            raise asyncio.CancelledError

    # ----- the task -------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile, watch, reconcile again, until cancelled."""
        reason = "start-up"
        try:
            while True:
                await self.reconcile(reason)
                reason = await self.watch()
        finally:
            if self.client is not None:
                await self.client.aclose()

    def trigger(self, reason: str) -> None:
        """Ask for a reconcile now (on demand, or a sign of drift seen elsewhere)."""
        self.reason = reason
        self.wake.set()

    async def reconcile(self, reason: str) -> None:
        """One reconcile, retried with capped full-jitter backoff until it succeeds."""
        log.debug("terminal %s: reconciling (%s)", self.terminal.name, reason)
        rc = self.cfg.reconciler
        retrying = AsyncRetrying(  # a new one per call: never shared between coroutines
            wait=wait_random_exponential(multiplier=rc.backoff_initial, max=rc.backoff_max),
            retry=retry_if_exception_type(Exception),  # CancelledError is not an Exception
            stop=stop_never,
            sleep=self.sleep,
            before_sleep=self._failed,
            reraise=True,
        )
        await retrying(self._attempt)

    # ----- one attempt ----------------------------------------------------------------------

    async def _ensure_client(self) -> terminals.TerminalClient:
        """The client, rebuilt when the trusted fingerprint changed (an operator re-trusted)."""
        pin = terminals.pin_for(self.store.reader, self.terminal)
        if self.client is not None and self.client.pin != pin:
            await self.client.aclose()
            self.client = None
        if self.client is None:
            self.client = terminals.client_for(
                self.cfg, self.terminal, self.store.reader, self.store.urgency
            )
        return self.client

    async def _attempt(self) -> None:
        self._honour_stop()
        self.health.attempts += 1
        self.health.last_attempt = self.clock.time()
        client = await self._ensure_client()
        try:
            await self._check_device(client)
            wrote = await self._register(client)
            if self.terminal.remote_auth:
                await self._remote_auth(client)
            else:
                self.health.auth_mode = (await client.functions()).get("auth_mode")
            await self.clock_sync.check(client)
            await self.settings_sync.check(client)
        finally:
            presented = getattr(client.context, "last_presented", None)
            self.health.presented_fingerprint = presented or self.health.presented_fingerprint
        await self._succeeded(client, wrote)

    async def _check_device(self, client: terminals.TerminalClient) -> None:
        info = await client.device_info()
        serial = str(info.get("device_sn") or "").strip()
        if serial != self.terminal.serial:
            raise TerminalMismatch(
                f"terminal {self.terminal.name}: {terminals.base_url(self.terminal)} is serial "
                f"{serial!r}, configured {self.terminal.serial!r}; refusing to register it"
            )
        if self.health.device and info != self.health.device:
            log.info("terminal %s: device info changed (upgrade or reset?)", self.terminal.name)
            self._gap = True
        self.health.device = info

    def _ours(self, registration: dict[str, Any] | None) -> bool:
        """The read-back registration is edged's (``enabled`` compared where it is shown)."""
        if registration is None or registration.get("event_dest") != self.event_dest:
            return False
        return registration.get("enabled", True) is True

    async def _register(self, client: terminals.TerminalClient) -> bool:
        """Write the registration when it differs or cannot be read; verify; True if written."""
        current = await client.subscription()
        wrote = not self._ours(current)
        if wrote:
            if current is not None:
                log.debug("terminal %s: registration was %s", self.terminal.name, current)
                self._gap = True
            await client.subscribe(self.event_dest, True)
        after = await client.subscription()
        if after is not None and not self._ours(after):
            raise TerminalError(f"terminal {self.terminal.name}: registration did not stick")
        self.health.registration = "asserted" if after is None else "confirmed"
        self.health.event_dest = self.event_dest
        return wrote

    async def _remote_auth(self, client: terminals.TerminalClient) -> None:
        """Read-modify-write of the functions object: only the three remote-auth fields."""
        wanted = {
            "auth_mode": self.terminal.remote_auth_mode,
            "remote_authentication_address": self.auth_url,
            "remote_auth_timeout_to_local_auth": desired.fallback_minutes(self.cfg, self.terminal),
        }
        functions = await client.functions()
        if any(functions.get(k) != v for k, v in wanted.items()):
            log.debug("terminal %s: setting remote authentication", self.terminal.name)
            await client.set_functions({**functions, **wanted})
            functions = await client.functions()
            if any(functions.get(k) != v for k, v in wanted.items()):
                raise TerminalError(f"terminal {self.terminal.name}: auth mode did not stick")
        self.health.auth_mode = functions.get("auth_mode")

    async def _succeeded(self, client: terminals.TerminalClient, wrote: bool) -> None:
        now = self.clock.time()
        if wrote:
            self.health.registrations += 1
            log.info(
                "terminal %s: push registration written (%s)", self.terminal.name, self.event_dest
            )
        if self._down:
            log.info("terminal %s is back: registered and verified", self.terminal.name)
        self._down = False
        if self.health.state != "registered":
            self.health.since = now
        self.health.state = "registered"
        self.health.last_error = None
        self.health.last_ok = now
        if (self._gap or wrote) and self.cfg.reconciler.backfill:
            try:
                await self._backfill(client, now)
            except TerminalError as exc:  # registered all the same: read the gap next time
                log.warning(
                    "terminal %s: back-fill failed, retried later: %s", self.terminal.name, exc
                )
                self._gap = True
                return
        self._gap = False
        await self._mark_synced(now, wrote)
        if self.on_reconciled is not None:
            self.on_reconciled(self.terminal.name)

    async def _backfill(self, client: terminals.TerminalClient, now: float) -> None:
        synced = presence.synced_until(self.store.reader, self.terminal.serial)
        if synced is None:
            return  # never synced: the history before edged knew the terminal is not edged's
        oldest = now - self.cfg.reconciler.backfill_max_hours * 3600
        begin = max(synced - GAP_MARGIN, oldest)
        self.health.backfilled += await backfill.backfill(client, self.store, begin, now)

    async def _mark_synced(self, now: float, wrote: bool) -> None:
        serial = self.terminal.serial

        await self.store.run(lambda conn: presence.mark_synced(conn, serial, now, wrote))

    def _failed(self, state: RetryCallState) -> None:
        """Before each backoff sleep: record the failure; one ERROR per transition."""
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return
        text = str(exc) or type(exc).__name__
        kind = _state_of(exc)
        delay = state.next_action.sleep if state.next_action else 0.0
        log.debug(
            "terminal %s: attempt %d failed: %s; next in %.1f s",
            self.terminal.name,
            state.attempt_number,
            text,
            delay,
        )
        if not isinstance(exc, TerminalError):
            log.debug("terminal %s: unexpected error", self.terminal.name, exc_info=exc)
        self._went_down(kind, text)

    def _went_down(self, kind: str, text: str) -> None:
        if not self._down or self.health.state != kind:
            log.error("terminal %s is %s: %s", self.terminal.name, kind, text)
            self.health.since = self.clock.time()
        self._down = True
        self._gap = True
        self.health.state = kind
        self.health.last_error = text
        if kind == "untrusted":
            self.health.registration = "untrusted"
        elif self.health.registration != "lost":
            self.health.registration = "unknown"

    def _lost(self, sign: str) -> None:
        """A reboot (or drift) seen while the terminal answers: its registration is gone."""
        log.info("terminal %s: %s; restoring its registration", self.terminal.name, sign)
        self.health.registration = "lost"
        self._gap = True

    # ----- waiting --------------------------------------------------------------------------

    async def _wait_wake(self, timeout: float) -> bool:
        if timeout > 0:
            await self.clock.wait(self.wake, timeout)
        woken = self.wake.is_set()
        self.wake.clear()
        return woken

    async def _ping(self) -> str:
        """``ok``, ``down``, or ``untrusted`` (it answers with another certificate)."""
        client = self.client
        if client is None:
            return "down"
        try:
            return "ok" if await client.ping() else "down"
        except TerminalUntrusted:
            return "untrusted"
        except TerminalError:
            return "down"

    async def _probe(self) -> str:
        """One watch probe: ``ok``, ``down``, ``untrusted``, or the sign of a reboot seen.

        The ping (where the firmware has one) proves the terminal answers; an authenticated
        call then proves it did not reboot since the last probe, however short the reboot:
        its registration read back (where the firmware shows it) or, where it cannot be read,
        a token refused within its lifetime.
        """
        client = self.client
        if client is None:
            return "down"
        if client.has_ping is not False:
            ping = await self._ping()
            if ping != "ok":
                return ping
        refused = client.refused_tokens
        try:
            if self.health.registration == "confirmed":
                if not self._ours(await client.subscription()):
                    return "registration lost (reboot?)"
            else:
                await client.device_info()
        except TerminalUntrusted:
            return "untrusted"
        except TerminalAuthError:
            return "login refused"
        except TerminalError:
            return "down"
        if client.refused_tokens > refused:
            return "token refused (reboot?)"
        return "ok"

    def _trust_changed(self) -> bool:
        """An operator trusted another certificate since the client was built."""
        current = self.client.pin if self.client is not None else None
        return terminals.pin_for(self.store.reader, self.terminal) != current

    async def _backoff_sleep(self, delay: float) -> None:
        """Sleep ``delay``, but retry at once when asked to, or when an unreachable one is back."""
        probe = self.cfg.reconciler.probe_interval
        clock = self.clock
        deadline = clock.monotonic() + delay
        unreachable = self.health.state == "down"
        untrusted = self.health.state == "untrusted"
        while (left := deadline - clock.monotonic()) > 0:
            self._honour_stop()
            if await self._wait_wake(min(left, probe)):
                return
            if untrusted and self._trust_changed():
                log.debug("terminal %s: trusted again, retrying now", self.terminal.name)
                return
            if unreachable and deadline - clock.monotonic() > 0 and await self._ping() != "down":
                log.debug("terminal %s: answers again, retrying now", self.terminal.name)
                return

    async def watch(self) -> str:
        """Wait for the next reason to reconcile; returns it."""
        rc = self.cfg.reconciler
        next_check = self.clock.monotonic() + rc.interval
        failing = False
        while True:
            self._honour_stop()
            if await self._wait_wake(min(rc.probe_interval, next_check - self.clock.monotonic())):
                return self.reason or "on demand"
            if self.clock.monotonic() >= next_check:
                return "periodic check"
            probe = await self._probe()
            self._honour_stop()
            if probe == "untrusted":
                return "a different certificate is presented"
            if probe == "down":
                if not failing:
                    self._went_down("down", "it does not answer")
                failing = True
                continue
            if failing:
                return "ping answers again (reboot?)"
            if probe != "ok":
                self._lost(probe)
                return probe
            sign = self._signs()
            if sign:
                return sign

    def _signs(self) -> str | None:
        """Drift seen by the receiver: heartbeats missing, first push after a silence."""
        seen = self.seen.get(self.terminal.serial)
        now = self.clock.time()
        if self.clock_sync.zone_due(now):
            return "the site's UTC offset changed (DST)"
        timeout = self.cfg.reconciler.heartbeat_timeout
        push = seen.last_push if seen else None
        previous, self._last_push = self._last_push, push
        if push is not None and previous is not None and push - previous > timeout:
            return "first push after a silence"
        if not self.terminal.remote_auth:
            return None
        beat = max((seen.last_heartbeat or 0.0) if seen else 0.0, self.health.last_ok or 0.0)
        if now - beat > timeout:
            if not self._beat_alarm:
                self._beat_alarm = True
                return f"no heartbeat for {timeout:.0f} s"
        else:
            self._beat_alarm = False
        return None

    def report(self) -> dict[str, Any]:
        """The health as plain data, with the terminal's clock and settings."""
        return {
            **asdict(self.health),
            "clock": self.clock_sync.report(),
            "settings": self.settings_sync.report(),
        }


class Reconcilers:
    """All managed terminals (those with a ``host``): started with the daemon."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        seen: dict[str, TerminalSeen],
        sleep: Sleep | None = None,
        plausible: Callable[[float], bool] | None = None,
        on_reconciled: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.items = {
            t.name: TerminalReconciler(
                cfg, t, store, seen, sleep=sleep, plausible=plausible, on_reconciled=on_reconciled
            )
            for t in cfg.terminals
            if t.host
        }

    def hooks(self) -> Hooks:
        """The daemon's service and /readyz entries for the managed terminals (and clocks)."""
        checks = [self.readiness]
        if self.cfg.terminal_clock.mode != "off":
            checks.append(self.clock_readiness)
        return Hooks(services=(self.run,), checks=tuple(checks))

    async def run(self) -> None:
        """Run every terminal's task until cancelled (a daemon service)."""
        tasks = [
            asyncio.create_task(r.run(), name=f"terminal-{name}") for name, r in self.items.items()
        ]
        try:
            if tasks:
                # asyncio.wait, not gather: a cancellation of this task raises here at once, so
                # the stop flags below are set even while a terminal's task swallowed its own
                # cancellation (anyio 3 inside an httpx call) and would otherwise run on.
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            else:
                await asyncio.Event().wait()
        finally:
            for reconciler in self.items.values():
                reconciler.stop()
            for task in tasks:
                task.cancel()
            # gather passes every further cancellation of this task on to the terminals' tasks:
            # the daemon's stop (aio.cancel_all) repeats it until they have ended.
            await asyncio.gather(*tasks, return_exceptions=True)

    def health(self) -> dict[str, dict[str, Any]]:
        """Health of each managed terminal, by serial."""
        return {r.terminal.serial: r.report() for r in self.items.values()}

    def readiness(self) -> tuple[str, bool, dict[str, Any]]:
        """The /readyz check: ready when every managed terminal is registered."""
        states = {name: r.health.state for name, r in self.items.items()}
        ok = all(state == "registered" for state in states.values())
        return "terminals", ok, {"states": states}

    def clock_readiness(self) -> tuple[str, bool, dict[str, Any]]:
        """The /readyz check of the terminals' clocks: not ready while one drifts too far."""
        drift = {name: r.clock_sync.health.drift for name, r in self.items.items()}
        drifting = sorted(name for name, r in self.items.items() if r.clock_sync.alarm)
        return "terminal_clocks", not drifting, {"drift": drift, "drifting": drifting}

    def resubscribe(self, name: str | None = None) -> list[str]:
        """Reconcile now (one terminal, or all); returns the names; KeyError if unknown."""
        names = [name] if name else list(self.items)
        for n in names:
            self.items[n].trigger("on demand")
        return names

    async def open_door(self, name: str, mode: int = 0) -> None:
        """Open a door through terminal ``name``'s relay."""
        client = await self.items[name]._ensure_client()
        await terminals.open_door(client, mode)
