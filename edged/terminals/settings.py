"""Terminal settings as desired state (docs/terminals.md, "Terminal settings").

What a site wants uniform on its terminals (``[terminal_settings]``, per terminal
``[terminals.settings]``, key by key) is kept there like the registration: at every reconcile
(start-up, a reboot seen, the periodic check, on demand) each object that holds a chosen key
(``/v1/device/access``, ``/v1/device/system``, ``/v1/device/recognize``) is read, the chosen
keys compared, and when one differs the whole object is posted back with only those keys
changed (the POST needs every required field and resets what it omits), then read again to
verify. A key the terminal's object does not have (older firmware) is not written: it is shown
as unsupported. Each write is logged once at INFO with what changed; a refusal once at WARNING
while it lasts. The remote-auth fallback timeout lives in ``/v1/device/functions`` and is
asserted with remote authentication by the reconciler (:func:`fallback_minutes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edged.clock import SYSTEM, Clock
from edged.config import Config, TerminalConfig
from edged.config.schema import GPIO_INPUTS, TerminalSettings
from edged.errors import TerminalAuthError, TerminalError, TerminalUntrusted
from edged.terminals.client import TerminalClient, as_object

log = logging.getLogger(__name__)

ACCESS, SYSTEM_PATH, RECOGNIZE = "/v1/device/access", "/v1/device/system", "/v1/device/recognize"
FLOAT_TOLERANCE = 1e-5  # the terminal keeps thresholds in single precision


def _seconds(value: Any) -> Any:
    return value if str(value).count(":") == 2 else f"{value}:00"


def _same(value: Any) -> Any:
    return value


# config key -> (object path, the terminal's field, config value to the terminal's)
KEYS: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    "gpio_b": (ACCESS, "gpio_b", GPIO_INPUTS.__getitem__),
    "gpio_c": (ACCESS, "gpio_c", GPIO_INPUTS.__getitem__),
    "keep_door_open_duration": (ACCESS, "keep_door_open_duration", _same),
    "door_sensor_timeout": (ACCESS, "door_sensor_timeout", _same),
    "tamper_alarm": (ACCESS, "tamper", _same),
    "forced_open_alarm": (ACCESS, "force_open", _same),
    "resign_interval": (ACCESS, "resign_interval", _same),
    "auto_reboot": (SYSTEM_PATH, "auto_reboot", _same),
    "reboot_time": (SYSTEM_PATH, "reboot_time", _seconds),
    "liveness": (RECOGNIZE, "liveness", _same),
    "liveness_threshold": (RECOGNIZE, "liveness_threshold", _same),
    "verify_threshold": (RECOGNIZE, "verify_threshold", _same),
    "certificate_threshold": (RECOGNIZE, "certificate_threshold", _same),
}


def effective(cfg: Config, terminal: TerminalConfig) -> TerminalSettings:
    """The terminal's settings over the site's, key by key."""
    return terminal.settings.over(cfg.terminal_settings)


def fallback_minutes(cfg: Config, terminal: TerminalConfig) -> int:
    """The remote-auth fallback timeout to assert: the terminal's settings, its own key, the
    site's settings, in that order; 0 (never fall back) when none is set."""
    own = terminal.settings.remote_auth_fallback_minutes
    if own is not None:
        return own
    if terminal.remote_auth_fallback_minutes:
        return terminal.remote_auth_fallback_minutes
    return cfg.terminal_settings.remote_auth_fallback_minutes or 0


def same(current: Any, wanted: Any) -> bool:
    """The terminal's value is the wanted one (thresholds within single precision)."""
    if isinstance(wanted, bool) or isinstance(current, bool):
        return current is wanted
    if isinstance(wanted, float) and isinstance(current, int | float):
        return abs(current - wanted) <= FLOAT_TOLERANCE
    return bool(current == wanted)


@dataclass
class SettingsHealth:
    """What edged knows of one terminal's settings (``terminals show``, the admin API)."""

    state: str = "none"  # none (nothing chosen), unknown, in-step, refused
    wanted: dict[str, Any] = field(default_factory=dict)  # the chosen keys (config names)
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)  # what the last write fixed
    unsupported: list[str] = field(default_factory=list)  # keys the firmware does not have
    writes: int = 0
    last_write: float | None = None
    last_check: float | None = None
    error: str | None = None


class SettingsSync:
    """One terminal's settings, kept as configured."""

    def __init__(self, cfg: Config, terminal: TerminalConfig, clock: Clock = SYSTEM) -> None:
        self.name = terminal.name
        self.clock = clock
        chosen = effective(cfg, terminal).chosen()
        self.wanted = {k: v for k, v in chosen.items() if k in KEYS}
        self.health = SettingsHealth(wanted=dict(self.wanted))
        if self.wanted:
            self.health.state = "unknown"
        self._error_logged: str | None = None
        self._unsupported_logged: set[str] = set()
        self._found: dict[str, dict[str, Any]] = {}

    async def check(self, client: TerminalClient) -> None:
        """Read, compare, write back what differs, verify; errors recorded, not raised
        (a refused login or an untrusted certificate is: the reconcile fails for it)."""
        if not self.wanted:
            return
        try:
            await self._check(client)
        except (TerminalAuthError, TerminalUntrusted):
            raise
        except TerminalError as exc:
            text = str(exc)
            self.health.error = text
            self.health.state = "refused"
            if self._error_logged != text:
                log.warning("terminal %s: settings not applied: %s", self.name, text)
                self._error_logged = text
            return
        if self._error_logged is not None:
            log.info("terminal %s: settings applied again", self.name)
        self._error_logged = None
        self.health.error = None
        self.health.state = "in-step"

    async def _check(self, client: TerminalClient) -> None:
        by_path: dict[str, dict[str, Any]] = {}
        for key, value in self.wanted.items():
            path, device_key, convert = KEYS[key]
            by_path.setdefault(path, {})[key] = (device_key, convert(value))
        unsupported: list[str] = []
        self._found = {}
        for path, keys in by_path.items():
            unsupported += await self._object(client, path, keys)
        if self._found:
            self.health.drift = self._found
        self.health.unsupported = unsupported
        self.health.last_check = self.clock.time()

    async def _object(
        self, client: TerminalClient, path: str, keys: dict[str, tuple[str, Any]]
    ) -> list[str]:
        current = await _read(client, path)
        changes: dict[str, Any] = {}
        drift: dict[str, dict[str, Any]] = {}
        unsupported = []
        for key, (device_key, wanted) in keys.items():
            if device_key not in current:
                unsupported.append(key)
                if key not in self._unsupported_logged:
                    log.warning(
                        "terminal %s: setting %s not applied: its firmware has no %s in %s",
                        self.name,
                        key,
                        device_key,
                        path,
                    )
                    self._unsupported_logged.add(key)
                continue
            if not same(current[device_key], wanted):
                changes[device_key] = wanted
                drift[key] = {"terminal": current[device_key], "wanted": wanted}
        if not changes:
            return unsupported
        await client.call("POST", path, {**current, **changes})
        after = await _read(client, path)
        lost = [k for k, v in changes.items() if not same(after.get(k), v)]
        if lost:
            raise TerminalError(f"terminal {self.name}: {path}: {', '.join(lost)} did not stick")
        self.health.writes += 1
        self.health.last_write = self.clock.time()
        self._found.update(drift)
        said = ", ".join(f"{k} {d['terminal']!r} -> {d['wanted']!r}" for k, d in drift.items())
        log.info("terminal %s: settings set: %s", self.name, said)
        return unsupported

    def report(self) -> dict[str, Any]:
        """The settings' health as plain data."""
        return asdict(self.health)


async def _read(client: TerminalClient, path: str) -> dict[str, Any]:
    return as_object(await client.call("GET", path), path)
