"""Keep a managed terminal's clock in step with the gateway's (docs/terminals.md, clocks).

A terminal whose clock drifts stamps every record and every live request with a time edged
takes for a replay, and evaluates its own schedules at the wrong hour. At every reconcile
(start-up, reboot, periodic check, on demand) :meth:`ClockSync.check` reads
``/v1/device/time``, measures the drift (the terminal's time minus the gateway's at the middle
of the round trip; the error is at most half the round trip), and by ``terminal_clock.mode``:

- ``measure``: only measures and alarms;
- ``ntp``: asserts ``server_address`` and ``manual_mode: false`` (the terminal keeps time itself);
- ``manual``: sets ``local_time`` (ms, ``manual_mode: true``) from the gateway's clock when the
  drift passes ``set_above`` seconds, and only while the gateway's own clock is plausible
  (:func:`edged.clock.plausible`): an unset gateway clock is never copied to the terminals.

With ``time_zone`` (the default) it also sets the terminal's whole-hour ``time_zone`` from
``site.timezone``, the offset at the current instant; the reconciler asks :meth:`zone_due`
at every probe, so a DST change is applied within a probe interval of it. A zone whose offset is
not a whole number of hours gets the whole hour *below* it (:func:`zone_for`): the terminal's
wall clock then reads that many minutes behind the site's, never ahead, and the residual is
shown. The drift alarm (``max_drift``, default half of ``receiver.stale_after``) is logged once
when raised and once when cleared, and is a /readyz check.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edged import clock as clocks
from edged.clock import Clock
from edged.config import Config
from edged.errors import TerminalAuthError, TerminalError, TerminalUntrusted
from edged.terminals.client import TerminalClient

log = logging.getLogger(__name__)

PATH = "/v1/device/time"
ZONE_MIN, ZONE_MAX = -11, 12  # the terminal's whole-hour offsets


def zone_for(tz: ZoneInfo, at: float) -> tuple[int, int]:
    """The terminal's whole-hour offset for the site's zone at ``at``, and the residual.

    Returns ``(hours, minutes)``: ``hours`` is the whole hour at or below the site's UTC offset
    (clamped to -11..+12), ``minutes`` how far the terminal's wall clock then reads behind the
    site's (0 for whole-hour zones; 30 for Asia/Kolkata; 45 for Asia/Kathmandu).
    """
    offset = datetime.fromtimestamp(at, tz).utcoffset()
    minutes = round(offset.total_seconds() / 60) if offset is not None else 0
    hours = min(max(math.floor(minutes / 60), ZONE_MIN), ZONE_MAX)
    return hours, minutes - hours * 60


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bare(address: Any) -> str:
    """An NTP server address without the ``http(s)://`` firmware 1.0 asks for."""
    text = str(address or "").strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            return text[len(scheme) :].rstrip("/")
    return text


@dataclass
class ClockHealth:
    """What edged knows of one terminal's clock (``terminals show``, the admin API)."""

    mode: str = "off"
    state: str = "unknown"  # in-step, drifting (the alarm), unknown (not measured), off
    drift: float | None = None  # seconds the terminal is ahead of the gateway (behind: < 0)
    round_trip: float | None = None  # of the measuring request: the drift is +- half of it
    measured_at: float | None = None
    max_drift: float = 0.0
    time_zone: int | None = None  # the terminal's, as read
    wanted_zone: int | None = None
    zone_residual_minutes: int = 0  # the terminal's wall clock reads this far behind the site's
    manual_mode: bool | None = None
    ntp_server: str | None = None
    sets: int = 0  # writes of /v1/device/time
    last_set: float | None = None
    error: str | None = None


class ClockSync:
    """One terminal's clock: measured, set, alarmed."""

    def __init__(
        self,
        cfg: Config,
        name: str,
        clock: Clock = clocks.SYSTEM,
        plausible: Callable[[float], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.settings = cfg.terminal_clock
        self.name = name
        self.clock = clock
        self.plausible = plausible or clocks.plausible
        self.tz = ZoneInfo(cfg.site.timezone)
        limit = self.settings.max_drift or cfg.receiver.stale_after / 2
        self.health = ClockHealth(mode=self.settings.mode, max_drift=limit)
        if self.settings.mode == "off":
            self.health.state = "off"
        self._asserted_zone: int | None = None
        self._implausible_logged = False
        self._error_logged: str | None = None
        self._version: tuple[int, ...] | None = None  # the terminal's firmware
        self._zone_tried: int | None = None  # the offset the last check wanted
        self._fresh = False  # measured during the current check

    @property
    def alarm(self) -> bool:
        """The drift passes the limit."""
        return self.health.state == "drifting"

    def zone_due(self, now: float) -> bool:
        """The site's offset moved away from the one asserted (a DST change): set it again."""
        if self.settings.mode not in ("ntp", "manual") or not self.settings.time_zone:
            return False
        if self._asserted_zone is None or not self.plausible(now):
            return False
        wanted = zone_for(self.tz, now)[0]
        # once per new offset: a terminal refusing it is not asked again at every probe
        return wanted != self._asserted_zone and wanted != self._zone_tried

    async def check(self, client: TerminalClient) -> None:
        """Measure, set what differs, measure again; errors recorded, not raised.

        A refused login or an untrusted certificate is raised (the reconcile fails as it
        would for the registration); any other failure is kept in the health, logged once
        while it lasts, and tried again at the next check.
        """
        if self.settings.mode == "off":
            return
        self._fresh = False
        try:
            await self._check(client)
        except (TerminalAuthError, TerminalUntrusted):
            raise
        except TerminalError as exc:
            text = str(exc)
            self.health.error = text
            if self._fresh:  # measured, then a write refused: the drift still counts
                self._judge()
            else:
                self.health.state = "unknown"
            if self._error_logged != text:
                log.warning("terminal %s: clock not checked: %s", self.name, text)
                self._error_logged = text
            return
        if self._error_logged is not None:
            log.info("terminal %s: clock checked again", self.name)
        self._error_logged = None
        self.health.error = None

    async def _measure(self, client: TerminalClient) -> dict[str, Any]:
        sent_wall = self.clock.time()
        sent = self.clock.monotonic()
        data = await client.call("GET", PATH)
        rtt = max(self.clock.monotonic() - sent, 0.0)
        if not isinstance(data, dict):
            raise TerminalError(f"terminal {self.name}: {PATH}: expected an object")
        local_ms = _int(data.get("local_time"))
        if local_ms is None:
            raise TerminalError(f"terminal {self.name}: {PATH}: no local_time in the answer")
        h = self.health
        self._fresh = True
        h.drift = round(local_ms / 1000 - (sent_wall + rtt / 2), 3)
        h.round_trip = round(rtt, 3)
        h.measured_at = sent_wall
        h.time_zone = _int(data.get("time_zone"))
        manual = data.get("manual_mode")
        h.manual_mode = manual if isinstance(manual, bool) else None
        h.ntp_server = _bare(data.get("server_address")) or None
        return data

    def _wanted(
        self, data: dict[str, Any], now: float, trusted: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """The changes to write (without ``local_time``) and what they are, for the log.

        ``trusted``: the gateway's clock is plausible; the zone (an offset at an instant) is
        only worked out from a clock that is.
        """
        changes: dict[str, Any] = {}
        said: list[str] = []
        h = self.health
        if self.settings.mode == "measure":
            return changes, said
        if self.settings.time_zone and trusted:
            hours, residual = zone_for(self.tz, now)
            h.wanted_zone, h.zone_residual_minutes = hours, residual
            self._zone_tried = hours
            if h.time_zone != hours:
                changes["time_zone"] = hours
                said.append(f"time zone UTC{hours:+d} (was {h.time_zone})")
        if self.settings.mode == "ntp":
            server = self.settings.ntp_server.strip()
            if h.ntp_server != _bare(server) or h.manual_mode is not False:
                old = client_version_1_0(self._version)
                address = server if "://" in server or not old else f"http://{server}"
                changes.update(manual_mode=False, server_address=address)
                said.append(f"NTP server {server}")
        return changes, said

    async def _check(self, client: TerminalClient) -> None:
        self._version = client.version
        data = await self._measure(client)
        now = self.clock.time()
        trusted = self.plausible(now)
        changes, said = self._wanted(data, now, trusted)
        h = self.health
        drift = h.drift or 0.0
        set_time = self.settings.mode == "manual" and (
            abs(drift) > self.settings.set_above or h.manual_mode is not True
        )
        if self.settings.mode in ("ntp", "manual") and not trusted:
            set_time = False
            if not self._implausible_logged:
                log.error(
                    "terminal %s: neither clock nor time zone set from the gateway: its own "
                    "clock is implausible (check NTP on the gateway)",
                    self.name,
                )
                self._implausible_logged = True
        elif trusted:
            self._implausible_logged = False
        if changes or set_time:
            body = {k: v for k, v in data.items() if k != "local_time"}
            body.update(changes)
            if set_time:
                body["manual_mode"] = True
                rtt = h.round_trip or 0.0
                local_ms = int((self.clock.time() + rtt / 2) * 1000)
                old = client_version_1_0(self._version)
                body["local_time"] = str(local_ms) if old else local_ms
                said.insert(0, f"clock set ({drift:+.1f} s off)")
            await client.call("POST", PATH, body)
            h.sets += 1
            h.last_set = self.clock.time()
            log.info("terminal %s: %s", self.name, "; ".join(said))
            await self._measure(client)
            if changes.get("time_zone") is not None and h.time_zone != changes["time_zone"]:
                raise TerminalError(f"terminal {self.name}: time zone did not stick")
        if self.settings.time_zone and h.time_zone is not None:
            self._asserted_zone = h.time_zone
        self._judge()

    def _judge(self) -> None:
        h = self.health
        if h.drift is None:
            return
        drifting = abs(h.drift) - (h.round_trip or 0.0) / 2 > h.max_drift
        state = "drifting" if drifting else "in-step"
        if state != h.state:
            if drifting:
                log.warning(
                    "terminal %s: clock is %+.1f s off the gateway's, past %.0f s: its records "
                    "and requests look replayed",
                    self.name,
                    h.drift,
                    h.max_drift,
                )
            elif h.state == "drifting":
                log.info("terminal %s: clock back in step (%+.1f s)", self.name, h.drift)
        h.state = state

    def report(self) -> dict[str, Any]:
        """The clock's health as plain data."""
        return asdict(self.health)


def client_version_1_0(version: tuple[int, ...] | None) -> bool:
    """Firmware 1.0: ``local_time`` a string, the NTP address with ``http://`` (en guide)."""
    return version is not None and version[:2] <= (1, 0)
