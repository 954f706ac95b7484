"""Configuration: TOML in, typed frozen dataclasses out, every error reported at once.

Each section is a dataclass; the validator walks the type hints, so adding a key is adding a
field (and documenting it in ``docs/config.md``: a test fails otherwise). A field's metadata may
carry ``check`` (a function returning an error text or None) and ``secret`` (masked by
``edged check-config --print``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import os
import re
import tomllib
import types
import typing
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edged.errors import ConfigError

DEFAULT_PATH = "/etc/edged/edged.toml"

Check = Callable[[Any], str | None]


def _meta(check: Check | None = None, secret: bool = False) -> dict[str, Any]:
    return {"check": check, "secret": secret}


def _listen_check(values: list[str]) -> str | None:
    for value in values:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdecimal() or not 0 <= int(port) <= 65535 or not host:
            return f"{value!r} is not HOST:PORT (use [::1]:8090 for IPv6)"
    return None


def _networks_check(values: list[str]) -> str | None:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP network such as 192.168.1.0/24"
    return None


def _address_check(value: str) -> str | None:
    """A terminal's ``address``: an address or a network of at most 256 addresses."""
    if not value:
        return None
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an IP address or network"
    if network.num_addresses > 256:
        return f"{value!r} is too large: at most 256 addresses (a /24)"
    return None


def _path_check(value: str) -> str | None:
    return None if value.startswith("/") else f"{value!r} must start with '/'"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _timezone_check(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{value!r} is not an IANA time zone such as 'Europe/Berlin'"
    return None


def _serial_check(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value) else f"{value!r} is not a serial"


def _name_check(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value):
        return None
    return f"{value!r}: use lower-case letters, digits, '-' and '_'"


PRIVATE_NETWORKS = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
]


@dataclass(frozen=True)
class SiteConfig:
    """Facts about the site as a whole."""

    name: str = "edged site"
    timezone: str = field(default="UTC", metadata=_meta(_timezone_check))
    language: str = "en"


@dataclass(frozen=True)
class ReceiverConfig:
    """The listener the terminals push to."""

    listen: list[str] = field(
        default_factory=lambda: ["0.0.0.0:8090"], metadata=_meta(_listen_check)
    )
    event_path: str = field(default="/eventRcv", metadata=_meta(_path_check))
    auth_path: str = field(default="/auth", metadata=_meta(_path_check))
    max_body_bytes: int = field(default=2 * 1024 * 1024, metadata=_meta(_positive))
    read_timeout: float = field(default=10.0, metadata=_meta(_positive))
    header_timeout: float = field(default=10.0, metadata=_meta(_positive))
    allowed_networks: list[str] = field(
        default_factory=lambda: list(PRIVATE_NETWORKS), metadata=_meta(_networks_check)
    )
    stale_after: int = field(default=30, metadata=_meta(_positive))
    accept_unknown_terminals: bool = False


@dataclass(frozen=True)
class AdminConfig:
    """The operators' listener: health, events, management."""

    listen: list[str] = field(
        default_factory=lambda: ["127.0.0.1:8091"], metadata=_meta(_listen_check)
    )
    token: str = field(default="", metadata=_meta(secret=True))
    token_file: str = ""


@dataclass(frozen=True)
class StorageConfig:
    """Where edged keeps its state."""

    state_dir: str = "/var/lib/edged"
    database: str = ""
    images_dir: str = ""
    store_images: bool = True
    images_max_bytes: int = field(default=1024 * 1024 * 1024, metadata=_meta(_not_negative))
    retention_days: int = field(default=180, metadata=_meta(_positive))

    @property
    def database_path(self) -> Path:
        """The SQLite file, ``state_dir/edged.db`` unless set."""
        return Path(self.database or Path(self.state_dir) / "edged.db")

    @property
    def images_path(self) -> Path:
        """The folder for snapshot JPEGs, ``state_dir/images`` unless set."""
        return Path(self.images_dir or Path(self.state_dir) / "images")


@dataclass(frozen=True)
class LoggingConfig:
    """How edged logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "journal", "text", "json"] = "auto"


@dataclass(frozen=True)
class TerminalConfig:
    """One door terminal edged serves."""

    name: str = field(default="", metadata=_meta(_name_check))
    serial: str = field(default="", metadata=_meta(_serial_check))
    door: str = ""
    # managed by the reconciler when host is set (docs/terminals.md)
    host: str = ""
    # where its pushes come from, when not its host or the first-seen address (docs/security.md)
    address: str = field(default="", metadata=_meta(_address_check))
    port: int = 8000
    scheme: Literal["https", "http"] = "https"
    username: str = "admin"
    password: str = field(default="", metadata=_meta(secret=True))
    password_file: str = ""
    tls_mode: Literal["pinned", "ca"] = "pinned"
    tls_fingerprint: str = ""
    ca_file: str = ""
    auth: Literal["jwt", "basic"] = "jwt"
    remote_auth: bool = False
    remote_auth_mode: Literal[1, 3] = 1
    remote_auth_fallback_minutes: int = 0


# ----- terminals -----
def _base_url_check(value: str) -> str | None:
    if not value:
        return None
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        return f"{value!r} is not an http:// or https:// URL such as 'http://192.168.1.10:8090'"
    return None


@dataclass(frozen=True)
class GatewayConfig:
    """How the terminals reach edged: the base of their event_dest and remote-auth address."""

    public_url: str = field(default="", metadata=_meta(_base_url_check))

    def url(self, path: str) -> str:
        """``public_url`` joined with a receiver path."""
        return self.public_url.rstrip("/") + path


def _token_check(value: int) -> str | None:
    return None if 1 <= value <= 1440 else "must be 1-1440 minutes"


@dataclass(frozen=True)
class ReconcilerConfig:
    """How edged keeps the terminals registered (docs/terminals.md)."""

    interval: float = field(default=300.0, metadata=_meta(_positive))
    probe_interval: float = field(default=2.0, metadata=_meta(_positive))
    backoff_initial: float = field(default=1.0, metadata=_meta(_positive))
    backoff_max: float = field(default=60.0, metadata=_meta(_positive))
    heartbeat_timeout: float = field(default=90.0, metadata=_meta(_positive))
    token_minutes: int = field(default=60, metadata=_meta(_token_check))
    request_timeout: float = field(default=10.0, metadata=_meta(_positive))
    backfill: bool = True
    backfill_max_hours: float = field(default=72.0, metadata=_meta(_positive))


# ----- doors -----
PinFactory = Literal["auto", "lgpio", "rpigpio", "pigpio", "native", "mock"]
MAX_PIN = 27  # BCM GPIO numbers on the 40-pin header
# Terminal alarm codes (push type 1) by name; keys of doors[].alarm_actions may be either.
ALARM_CODES: dict[str, int] = {
    "tamper": 10001,
    "forced": 10002,
    "held_open": 10003,
    "password_attack": 10004,
    "fire": 20003,
}
ALARM_ACTIONS = ("log", "siren", "release")
DEFAULT_ALARM_ACTIONS: dict[str, str] = {
    "tamper": "siren",
    "forced": "siren",
    "held_open": "log",
    "password_attack": "log",
    "fire": "log",
}


def _pin_check(value: int | None) -> str | None:
    if value is None or 0 <= value <= MAX_PIN:
        return None
    return f"{value} is not a GPIO number 0-{MAX_PIN} (BCM numbering)"


def _alarm_actions_check(values: dict[str, str]) -> str | None:
    for key, action in values.items():
        if key not in ALARM_CODES and not key.isdecimal():
            return f"{key!r} is not an alarm name ({', '.join(ALARM_CODES)}) or a numeric code"
        if action not in ALARM_ACTIONS:
            return f"{key}: {action!r} is not one of {', '.join(map(repr, ALARM_ACTIONS))}"
    return None


@dataclass(frozen=True)
class GpioConfig:
    """How edged reaches the GPIO pins."""

    pin_factory: PinFactory = "auto"


@dataclass(frozen=True)
class LockConfig:
    """A door's lock output: a relay or driver that powers the lock when active."""

    pin: int | None = field(default=None, metadata=_meta(_pin_check))
    active_high: bool = True
    kind: Literal["fail_secure", "fail_safe"] = "fail_secure"


@dataclass(frozen=True)
class InputConfig:
    """A switch input (door contact, exit button): unset pin means not fitted."""

    pin: int | None = field(default=None, metadata=_meta(_pin_check))
    pull_up: bool = True
    bounce_time: float = field(default=0.05, metadata=_meta(_positive))


@dataclass(frozen=True)
class DoorConfig:
    """One door edged drives."""

    name: str = field(default="", metadata=_meta(_name_check))
    lock: LockConfig = field(default_factory=LockConfig)
    unlock_time: float = field(default=5.0, metadata=_meta(_positive))
    max_unlock_time: float = field(default=60.0, metadata=_meta(_positive))
    contact: InputConfig = field(default_factory=InputConfig)
    held_open_time: float = field(default=30.0, metadata=_meta(_positive))
    relock_on_close: bool = True
    rex: InputConfig = field(default_factory=InputConfig)
    fire_release: bool = True
    open_on_terminal_pass: bool = False
    terminal_relay: str = ""
    alarm_actions: dict[str, str] = field(
        default_factory=dict, metadata=_meta(_alarm_actions_check)
    )

    def alarm_action(self, code: int | None) -> str:
        """The action for a terminal alarm code: configured by name or number, else default."""
        names = [n for n, c in ALARM_CODES.items() if c == code]
        for key in [str(code), *names]:
            if key in self.alarm_actions:
                return self.alarm_actions[key]
        return DEFAULT_ALARM_ACTIONS.get(names[0], "log") if names else "log"


@dataclass(frozen=True)
class SirenConfig:
    """The site's siren (or buzzer) output."""

    pin: int | None = field(default=None, metadata=_meta(_pin_check))
    active_high: bool = True
    sound_time: float = field(default=60.0, metadata=_meta(_positive))


@dataclass(frozen=True)
class FireConfig:
    """The fire panel's input: while active, fire-release doors stay unlocked."""

    pin: int | None = field(default=None, metadata=_meta(_pin_check))
    pull_up: bool = True
    active_high: bool = True
    bounce_time: float = field(default=0.1, metadata=_meta(_positive))


# ----- policy -----
TipsTable = dict[str, str | dict[str, str]]


def _tips_problems(cfg: Config) -> list[str]:
    """``[tips]`` keys are decision reasons; ``[tips.<lang>]`` tables hold reasons too."""
    from edged.decide.policy import Reason

    reasons = [r.value for r in Reason]
    problems: list[str] = []

    def check(path: str, key: str) -> None:
        if key not in reasons:
            close = difflib.get_close_matches(key, reasons, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{path}.{key}: not a decision reason (docs/decisions.md){hint}")

    for key, value in cfg.tips.items():
        if isinstance(value, dict):
            if not re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]{2,8})?", key):
                problems.append(f"tips.{key}: not a language code such as 'de' or 'pt-BR'")
            for reason in value:
                check(f"tips.{key}", reason)
        else:
            check("tips", key)
    return problems


# ----- upstream -----
def _url_check(value: str) -> str | None:
    if not value or re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return None
    return f"{value!r} is not an http:// or https:// URL"


@dataclass(frozen=True)
class UpstreamConfig:
    """The central access-control server: decisions, record forwarding, people sync."""

    url: str = field(default="", metadata=_meta(_url_check))
    deadline: float = field(default=0.5, metadata=_meta(_positive))
    breaker_failures: int = field(default=3, metadata=_meta(_positive))
    probe_interval: float = field(default=5.0, metadata=_meta(_positive))
    cache_may_grant: bool = True
    online_only_doors: list[str] = field(default_factory=list)
    forward_url: str = field(default="", metadata=_meta(_url_check))
    forward_batch_size: int = field(default=200, metadata=_meta(_positive))
    forward_include_images: bool = False
    forward_max_bytes: int = field(default=8 * 1024 * 1024, metadata=_meta(_positive))
    forward_timeout: float = field(default=30.0, metadata=_meta(_positive))
    forward_interval: float = field(default=1.0, metadata=_meta(_positive))
    forward_retry_min: float = field(default=1.0, metadata=_meta(_positive))
    forward_retry_max: float = field(default=60.0, metadata=_meta(_positive))
    people_url: str = field(default="", metadata=_meta(_url_check))
    people_interval: float = field(default=300.0, metadata=_meta(_positive))
    people_timeout: float = field(default=30.0, metadata=_meta(_positive))
    people_max_bytes: int = field(default=16 * 1024 * 1024, metadata=_meta(_positive))
    max_cache_age: float = field(default=0.0, metadata=_meta(_not_negative))
    stale_cache: Literal["keep", "deny"] = "keep"
    override_people: list[str] = field(default_factory=list)
    token: str = field(default="", metadata=_meta(secret=True))
    token_file: str = ""
    ca_file: str = ""

    @property
    def enabled(self) -> bool:
        """Any part of the upstream is configured."""
        return bool(self.url or self.forward_url or self.people_url)


def _upstream_doors(cfg: Config) -> list[str]:
    doors = {t.door for t in cfg.terminals if t.door}
    return [
        f"upstream.online_only_doors[{i}]: {name!r} is not the door of any terminal"
        for i, name in enumerate(cfg.upstream.online_only_doors)
        if name not in doors
    ]


def _upstream_cache_age(cfg: Config) -> list[str]:
    if cfg.upstream.max_cache_age and not cfg.upstream.people_url:
        return ["upstream.max_cache_age: needs upstream.people_url (the cache's only source)"]
    return []


def upstream_token(cfg: Config) -> str:
    """The upstream bearer token: ``upstream.token_file`` wins over inline ``upstream.token``."""
    if cfg.upstream.token_file:
        try:
            return Path(cfg.upstream.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"upstream.token_file: cannot read: {exc}") from None
    return cfg.upstream.token


@dataclass(frozen=True)
class Config:
    """The whole, validated configuration."""

    site: SiteConfig = field(default_factory=SiteConfig)
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tips: TipsTable = field(default_factory=dict)
    terminals: list[TerminalConfig] = field(default_factory=list)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    doors: list[DoorConfig] = field(default_factory=list)
    siren: SirenConfig = field(default_factory=SirenConfig)
    fire: FireConfig = field(default_factory=FireConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    reconciler: ReconcilerConfig = field(default_factory=ReconcilerConfig)
    source: str = field(default="", compare=False, metadata={"internal": True})

    def terminal_by_serial(self, serial: str) -> TerminalConfig | None:
        """The configured terminal with this serial, if any (asked on every request)."""
        return self._terminals_by_serial.get(serial)

    def door_by_name(self, name: str) -> DoorConfig | None:
        """The configured door with this name, if any."""
        return {d.name: d for d in self.doors}.get(name)

    @functools.cached_property
    def _terminals_by_serial(self) -> dict[str, TerminalConfig]:
        # built once per (immutable) Config; a reload makes a new Config and so a new index
        return {t.serial: t for t in self.terminals}


# Cross-field checks: each takes the built Config and returns problems.
def _unique_terminals(cfg: Config) -> list[str]:
    problems: list[str] = []
    for attr in ("name", "serial"):
        seen: set[str] = set()
        for i, terminal in enumerate(cfg.terminals):
            value = getattr(terminal, attr)
            if not value:
                problems.append(f"terminals[{i}].{attr}: is required")
            elif value in seen:
                problems.append(f"terminals[{i}].{attr}: {value!r} is used twice")
            seen.add(value)
    return problems


def _distinct_paths(cfg: Config) -> list[str]:
    if cfg.receiver.event_path == cfg.receiver.auth_path:
        return ["receiver.auth_path: must differ from receiver.event_path"]
    return []


def _doors_valid(cfg: Config) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for i, door in enumerate(cfg.doors):
        if not door.name:
            problems.append(f"doors[{i}].name: is required")
        elif door.name in seen:
            problems.append(f"doors[{i}].name: {door.name!r} is used twice")
        seen.add(door.name)
        if door.lock.pin is None and not door.terminal_relay:
            problems.append(f"doors[{i}].lock.pin: is required (or a terminal_relay)")
        if door.terminal_relay:
            relay = next((t for t in cfg.terminals if t.name == door.terminal_relay), None)
            if relay is None or not relay.host:
                problems.append(
                    f"doors[{i}].terminal_relay: {door.terminal_relay!r} is not a managed "
                    "terminal (a [[terminals]] name with a host)"
                )
        if door.unlock_time > door.max_unlock_time:
            problems.append(f"doors[{i}].unlock_time: must not exceed max_unlock_time")
    return problems


def _terminal_doors_exist(cfg: Config) -> list[str]:
    if not cfg.doors:
        return []
    names = {d.name for d in cfg.doors}
    return [
        f"terminals[{i}].door: {t.door!r} is not a configured door ({', '.join(sorted(names))})"
        for i, t in enumerate(cfg.terminals)
        if t.door and t.door not in names
    ]


def _pins_used_once(cfg: Config) -> list[str]:
    owners: list[tuple[str, int | None]] = []
    for i, door in enumerate(cfg.doors):
        for part in ("lock", "contact", "rex"):
            owners.append((f"doors[{i}].{part}.pin", getattr(door, part).pin))
    owners += [("siren.pin", cfg.siren.pin), ("fire.pin", cfg.fire.pin)]
    problems: list[str] = []
    first: dict[int, str] = {}
    for path, pin in owners:
        if pin is None:
            continue
        if pin in first:
            problems.append(f"{path}: GPIO {pin} is already used by {first[pin]}")
        else:
            first[pin] = path
    return problems


def _managed_terminals(cfg: Config) -> list[str]:
    """Managed terminals need a gateway URL the terminal can use, within 1024 bytes."""
    problems: list[str] = []
    if any(t.host for t in cfg.terminals) and not cfg.gateway.public_url:
        problems.append("gateway.public_url: required when a terminal has a host (reconciler)")
    for path in (cfg.receiver.event_path, cfg.receiver.auth_path):
        if len(cfg.gateway.url(path).encode()) > 1024:
            problems.append("gateway.public_url: the terminals' URLs would pass 1024 bytes")
    for i, t in enumerate(cfg.terminals):
        problems.extend(f"terminals[{i}].{p}" for p in _terminal_problems(t))
    return problems


def _terminal_problems(t: TerminalConfig) -> list[str]:
    from edged.terminals.tlspin import check_fingerprint

    problems = []
    if not 1 <= t.port <= 65535:
        problems.append("port: must be a port number 1-65535")
    if t.password and t.password_file:
        problems.append("password: set password or password_file, not both")
    fingerprint = check_fingerprint(t.tls_fingerprint)
    if fingerprint:
        problems.append(f"tls_fingerprint: {fingerprint}")
    if not 0 <= t.remote_auth_fallback_minutes <= 60:
        problems.append("remote_auth_fallback_minutes: must be 0-60 (0: never)")
    return problems


CROSS_CHECKS: list[Callable[[Config], list[str]]] = [
    _unique_terminals,
    _distinct_paths,
    _doors_valid,
    _terminal_doors_exist,
    _pins_used_once,
    _tips_problems,
    _upstream_doors,
    _upstream_cache_age,
    _managed_terminals,
]


class _Locator:
    """Finds the line of a key path in the TOML text, for error messages."""

    _header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
    _key = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counts: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._header.match(line)
            if header:
                name = header.group(2).replace('"', "").replace("'", "").replace(" ", "")
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    name = f"{name}[{counts[name]}]"
                table = name
                self.lines.setdefault(table, number)
                continue
            key = self._key.match(line)
            if key:
                path = f"{table}.{key.group(1).strip(chr(34) + chr(39))}" if table else key.group(1)
                self.lines.setdefault(path, number)

    def line(self, path: str) -> int | None:
        """The line of ``path`` or of its nearest enclosing table."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return None


class _Builder:
    """Turns plain TOML values into typed dataclasses, collecting every problem."""

    def __init__(self, locator: _Locator) -> None:
        self.locator = locator
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        line = self.locator.line(path)
        where = f" (line {line})" if line else ""
        self.problems.append(f"{path}{where}: {message}")

    def build(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"must be a table, not {_kind(data)}")
            return cls()
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            sub = f"{path}.{key}" if path else key
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.fail(sub, f"unknown key{hint}")
                continue
            value, ok = self.convert(hints[key], raw, sub)
            check = fields[key].metadata.get("check")
            if ok and check is not None:
                message = check(value)
                if message:
                    self.fail(sub, message)
                    continue
            if ok:
                values[key] = value
        return cls(**values)

    def convert(self, hint: Any, raw: Any, path: str) -> tuple[Any, bool]:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            count = len(self.problems)
            return self.build(hint, raw, path), len(self.problems) == count
        if origin is Literal:
            if raw in args:
                return raw, True
            self.fail(path, f"{raw!r} is not one of {', '.join(map(repr, args))}")
            return None, False
        if origin in (typing.Union, types.UnionType):
            for arg in args:
                if arg is type(None):
                    continue
                if _plain_match(arg, raw):
                    return self.convert(arg, raw, path)
            self.fail(path, f"must be {_describe(hint)}, not {_kind(raw)}")
            return None, False
        if origin is list:
            if not isinstance(raw, list):
                self.fail(path, f"must be a list, not {_kind(raw)}")
                return None, False
            items, ok = [], True
            for i, item in enumerate(raw):
                value, item_ok = self.convert(args[0], item, f"{path}[{i}]")
                items.append(value)
                ok = ok and item_ok
            return items, ok
        if origin is dict:
            if not isinstance(raw, dict):
                self.fail(path, f"must be a table, not {_kind(raw)}")
                return None, False
            out, ok = {}, True
            for key, item in raw.items():
                value, item_ok = self.convert(args[1], item, f"{path}.{key}")
                out[key] = value
                ok = ok and item_ok
            return out, ok
        if _plain_match(hint, raw):
            return (float(raw) if hint is float else raw), True
        self.fail(path, f"must be {_describe(hint)}, not {_kind(raw)}")
        return None, False


def _plain_match(hint: Any, raw: Any) -> bool:
    if hint is bool:
        return isinstance(raw, bool)
    if hint is int:
        return isinstance(raw, int) and not isinstance(raw, bool)
    if hint is float:
        return isinstance(raw, int | float) and not isinstance(raw, bool)
    if hint is str:
        return isinstance(raw, str)
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and isinstance(raw, origin)


def _describe(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    return getattr(hint, "__name__", str(hint))


def _kind(raw: Any) -> str:
    if isinstance(raw, bool):
        return "a boolean"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(raw), type(raw).__name__)


def parse(text: str, source: str = "<string>") -> Config:
    """Validate TOML text into a Config; raise ConfigError with every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    builder = _Builder(_Locator(text))
    cfg = builder.build(Config, data, "")
    problems = builder.problems
    if not problems:
        for check in CROSS_CHECKS:
            problems.extend(check(cfg))
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return dataclasses.replace(cfg, source=source)


def resolve_path(explicit: str | None) -> str:
    """The config file to read: ``-c``, else ``$EDGED_CONFIG``, else the default."""
    return explicit or os.environ.get("EDGED_CONFIG") or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    """Read and validate the configuration file."""
    resolved = resolve_path(path)
    try:
        text = Path(resolved).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{resolved}: no such file (use -c or EDGED_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{resolved}: cannot read: {exc}") from None
    return parse(text, resolved)


def admin_token(cfg: Config) -> str:
    """The admin write token: ``admin.token_file`` wins over inline ``admin.token``."""
    if cfg.admin.token_file:
        try:
            return Path(cfg.admin.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"admin.token_file: cannot read: {exc}") from None
    return cfg.admin.token


def to_dict(obj: Any, mask: bool = True) -> Any:
    """The effective configuration as plain data, secrets masked."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if mask and f.metadata.get("secret") and value:
                out[f.name] = "********"
            else:
                out[f.name] = to_dict(value, mask)
        return out
    if isinstance(obj, list):
        return [to_dict(v, mask) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, mask) for k, v in obj.items()}
    return obj


def to_toml(data: dict[str, Any]) -> str:
    """Render plain config data as TOML (for ``check-config --print``)."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list) or _scalar_list(v)}
    for key, value in scalars.items():
        if value is None:  # TOML has no null: an unset optional key is left out
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            for sub, item in value.items():
                if item is not None:
                    lines.append(f"{_toml_key(sub)} = {_toml_value(item)}")
        elif isinstance(value, list) and not _scalar_list(value):
            for item in value:
                lines.append(f"\n[[{key}]]")
                for sub, sub_value in item.items():
                    if sub_value is None:
                        continue
                    lines.append(f"{_toml_key(sub)} = {_toml_value(sub_value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict) for v in value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{ " + inner + " }"
    return _toml_value(str(value))
