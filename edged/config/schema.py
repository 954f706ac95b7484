"""The configuration's schema: one frozen dataclass a section, defaults and value checks.

The builder (``edged.config.builder``) walks these type hints, so adding a key is adding a field
here (and documenting it in ``docs/config.md``: a test fails otherwise).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edged.config.fields import (
    Check,
    address_check,
    base_url_check,
    listen_check,
    meta,
    name_check,
    networks_check,
    not_negative,
    path_check,
    positive,
    serial_check,
    timezone_check,
    token_check,
    url_check,
)

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
    timezone: str = field(default="UTC", metadata=meta(timezone_check))
    language: str = "en"


@dataclass(frozen=True)
class ReceiverConfig:
    """The listener the terminals push to."""

    listen: list[str] = field(default_factory=lambda: ["0.0.0.0:8090"], metadata=meta(listen_check))
    event_path: str = field(default="/eventRcv", metadata=meta(path_check))
    auth_path: str = field(default="/auth", metadata=meta(path_check))
    max_body_bytes: int = field(default=2 * 1024 * 1024, metadata=meta(positive))
    read_timeout: float = field(default=10.0, metadata=meta(positive))
    header_timeout: float = field(default=10.0, metadata=meta(positive))
    allowed_networks: list[str] = field(
        default_factory=lambda: list(PRIVATE_NETWORKS), metadata=meta(networks_check)
    )
    stale_after: int = field(default=30, metadata=meta(positive))
    accept_unknown_terminals: bool = False


@dataclass(frozen=True)
class AdminConfig:
    """The operators' listener: health, events, management."""

    listen: list[str] = field(
        default_factory=lambda: ["127.0.0.1:8091"], metadata=meta(listen_check)
    )
    token: str = field(default="", metadata=meta(secret=True))
    token_file: str = ""


@dataclass(frozen=True)
class StorageConfig:
    """Where edged keeps its state."""

    state_dir: str = "/var/lib/edged"
    database: str = ""
    images_dir: str = ""
    store_images: bool = True
    images_max_bytes: int = field(default=1024 * 1024 * 1024, metadata=meta(not_negative))
    retention_days: int = field(default=180, metadata=meta(positive))

    @property
    def database_path(self) -> Path:
        """The SQLite file, ``state_dir/edged.db`` unless set."""
        return Path(self.database or Path(self.state_dir) / "edged.db")

    @property
    def images_path(self) -> Path:
        """The folder for snapshot JPEGs, ``state_dir/images`` unless set."""
        return Path(self.images_dir or Path(self.state_dir) / "images")

    @property
    def faces_path(self) -> Path:
        """The folder for the people's face photos, ``state_dir/faces`` (access/faces.py)."""
        return Path(self.state_dir) / "faces"


@dataclass(frozen=True)
class LoggingConfig:
    """How edged logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "journal", "text", "json"] = "auto"


# ----- terminals -----
# The terminal's GPIO input functions (/v1/device/access gpio_b, gpio_c), by name.
GPIO_INPUTS: dict[str, int] = {"none": 1, "door_contact": 2, "exit_button": 3, "fire": 4}


def _between(low: float, high: float, unit: str = "", open_ends: bool = False) -> Check:
    def check(value: float) -> str | None:
        inside = low < value < high if open_ends else low <= value <= high
        if inside:
            return None
        if open_ends:
            return f"must be between {low:g} and {high:g} (both excluded)"
        return f"must be {low:g}-{high:g}{unit}"

    return check


def gpio_input_check(value: str) -> str | None:
    """A terminal input function name."""
    if value in GPIO_INPUTS:
        return None
    return f"{value!r} is not one of {', '.join(map(repr, GPIO_INPUTS))}"


def reboot_time_check(value: str) -> str | None:
    """A time of day ``HH:MM:SS`` (or ``HH:MM``)."""
    found = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)(:([0-5]\d))?", value)
    return None if found else f"{value!r} is not a time of day such as '02:00:00'"


@dataclass(frozen=True)
class TerminalSettings:
    """Settings edged keeps on managed terminals; an unset key leaves the terminal's own value.

    Site-wide in ``[terminal_settings]``, per terminal in ``[terminals.settings]`` (which wins,
    key by key). Applied by read-modify-write (docs/terminals.md, "Terminal settings").
    """

    gpio_b: str | None = field(default=None, metadata=meta(gpio_input_check))
    gpio_c: str | None = field(default=None, metadata=meta(gpio_input_check))
    keep_door_open_duration: int | None = field(default=None, metadata=meta(_between(1, 30, " s")))
    door_sensor_timeout: int | None = field(default=None, metadata=meta(_between(1, 600, " s")))
    tamper_alarm: bool | None = None
    forced_open_alarm: bool | None = None
    resign_interval: int | None = field(default=None, metadata=meta(_between(0, 1800, " s")))
    auto_reboot: bool | None = None
    reboot_time: str | None = field(default=None, metadata=meta(reboot_time_check))
    remote_auth_fallback_minutes: int | None = field(
        default=None, metadata=meta(_between(0, 60, " minutes (0: never)"))
    )
    liveness: bool | None = None
    liveness_threshold: float | None = field(
        default=None, metadata=meta(_between(0, 1, open_ends=True))
    )
    verify_threshold: float | None = field(
        default=None, metadata=meta(_between(0, 1, open_ends=True))
    )
    certificate_threshold: float | None = field(
        default=None, metadata=meta(_between(0, 1, open_ends=True))
    )

    def over(self, default: TerminalSettings) -> TerminalSettings:
        """These settings, each unset key taken from ``default`` (the site's)."""
        mine = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return dataclasses.replace(default, **mine)

    def chosen(self) -> dict[str, object]:
        """The keys set, with their values."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class TerminalClockConfig:
    """How edged keeps the managed terminals' clocks (docs/terminals.md, "Terminal clocks")."""

    mode: Literal["off", "measure", "ntp", "manual"] = "off"
    ntp_server: str = ""
    time_zone: bool = True
    max_drift: float = field(default=0.0, metadata=meta(not_negative))
    set_above: float = field(default=1.0, metadata=meta(positive))


@dataclass(frozen=True)
class TerminalConfig:
    """One door terminal edged serves."""

    name: str = field(default="", metadata=meta(name_check))
    serial: str = field(default="", metadata=meta(serial_check))
    door: str = ""
    # managed by the reconciler when host is set (docs/terminals.md)
    host: str = ""
    # where its pushes come from, when not its host or the first-seen address (docs/security.md)
    address: str = field(default="", metadata=meta(address_check))
    port: int = 8000
    scheme: Literal["https", "http"] = "https"
    username: str = "admin"
    password: str = field(default="", metadata=meta(secret=True))
    password_file: str = ""
    tls_mode: Literal["pinned", "ca"] = "pinned"
    tls_fingerprint: str = ""
    ca_file: str = ""
    auth: Literal["jwt", "basic"] = "jwt"
    remote_auth: bool = False
    remote_auth_mode: Literal[1, 3] = 1
    remote_auth_fallback_minutes: int = 0
    settings: TerminalSettings = field(default_factory=TerminalSettings)


@dataclass(frozen=True)
class GatewayConfig:
    """How the terminals reach edged: the base of their event_dest and remote-auth address."""

    public_url: str = field(default="", metadata=meta(base_url_check))

    def url(self, path: str) -> str:
        """``public_url`` joined with a receiver path."""
        return self.public_url.rstrip("/") + path


@dataclass(frozen=True)
class ReconcilerConfig:
    """How edged keeps the terminals registered (docs/terminals.md)."""

    interval: float = field(default=300.0, metadata=meta(positive))
    probe_interval: float = field(default=2.0, metadata=meta(positive))
    backoff_initial: float = field(default=1.0, metadata=meta(positive))
    backoff_max: float = field(default=60.0, metadata=meta(positive))
    heartbeat_timeout: float = field(default=90.0, metadata=meta(positive))
    token_minutes: int = field(default=60, metadata=meta(token_check))
    request_timeout: float = field(default=10.0, metadata=meta(positive))
    backfill: bool = True
    backfill_max_hours: float = field(default=72.0, metadata=meta(positive))


@dataclass(frozen=True)
class PeopleSyncConfig:
    """The terminals hold the site's people (docs/terminals.md, "People on the terminals")."""

    enabled: bool = False
    interval: float = field(default=300.0, metadata=meta(positive))
    poll_interval: float = field(default=1.0, metadata=meta(positive))
    batch_size: int = field(default=20, metadata=meta(positive))
    batch_bytes: int = field(default=4 * 1024 * 1024, metadata=meta(positive))
    retry_initial: float = field(default=2.0, metadata=meta(positive))
    retry_max: float = field(default=120.0, metadata=meta(positive))


# ----- doors -----
PinFactory = Literal["auto", "lgpio", "rpigpio", "pigpio", "native", "mock", "gpiod"]
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


def pin_check(value: int | None) -> str | None:
    """A GPIO number on the 40-pin header (BCM numbering), or unset."""
    if value is None or 0 <= value <= MAX_PIN:
        return None
    return f"{value} is not a GPIO number 0-{MAX_PIN} (BCM numbering)"


def chip_check(value: str) -> str | None:
    """The GPIO chip of the ``gpiod`` factory: a character device's path."""
    if value.startswith("/dev/") and len(value) > 5:
        return None
    return f"{value!r} is not a GPIO chip's path (/dev/gpiochipN)"


def alarm_actions_check(values: dict[str, str]) -> str | None:
    """Alarm actions: a known alarm name or a numeric code, and a known action."""
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
    chip: str = field(default="/dev/gpiochip0", metadata=meta(chip_check))


@dataclass(frozen=True)
class LockConfig:
    """A door's lock output: a relay or driver that powers the lock when active."""

    pin: int | None = field(default=None, metadata=meta(pin_check))
    active_high: bool = True
    kind: Literal["fail_secure", "fail_safe"] = "fail_secure"


@dataclass(frozen=True)
class InputConfig:
    """A switch input (door contact, exit button): unset pin means not fitted."""

    pin: int | None = field(default=None, metadata=meta(pin_check))
    pull_up: bool = True
    bounce_time: float = field(default=0.05, metadata=meta(positive))


@dataclass(frozen=True)
class DoorConfig:
    """One door edged drives."""

    name: str = field(default="", metadata=meta(name_check))
    lock: LockConfig = field(default_factory=LockConfig)
    unlock_time: float = field(default=5.0, metadata=meta(positive))
    max_unlock_time: float = field(default=60.0, metadata=meta(positive))
    contact: InputConfig = field(default_factory=InputConfig)
    held_open_time: float = field(default=30.0, metadata=meta(positive))
    relock_on_close: bool = True
    rex: InputConfig = field(default_factory=InputConfig)
    fire_release: bool = True
    open_on_terminal_pass: bool = False
    terminal_relay: str = ""
    alarm_actions: dict[str, str] = field(default_factory=dict, metadata=meta(alarm_actions_check))

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

    pin: int | None = field(default=None, metadata=meta(pin_check))
    active_high: bool = True
    sound_time: float = field(default=60.0, metadata=meta(positive))


@dataclass(frozen=True)
class FireConfig:
    """The fire panel's input: while active, fire-release doors stay unlocked."""

    pin: int | None = field(default=None, metadata=meta(pin_check))
    pull_up: bool = True
    active_high: bool = True
    bounce_time: float = field(default=0.1, metadata=meta(positive))


# ----- policy -----
TipsTable = dict[str, str | dict[str, str]]


# ----- upstream -----
@dataclass(frozen=True)
class UpstreamConfig:
    """The central access-control server: decisions, record forwarding, people sync."""

    url: str = field(default="", metadata=meta(url_check))
    deadline: float = field(default=0.5, metadata=meta(positive))
    breaker_failures: int = field(default=3, metadata=meta(positive))
    probe_interval: float = field(default=5.0, metadata=meta(positive))
    cache_may_grant: bool = True
    online_only_doors: list[str] = field(default_factory=list)
    forward_url: str = field(default="", metadata=meta(url_check))
    forward_batch_size: int = field(default=200, metadata=meta(positive))
    forward_include_images: bool = False
    forward_max_bytes: int = field(default=8 * 1024 * 1024, metadata=meta(positive))
    forward_timeout: float = field(default=30.0, metadata=meta(positive))
    forward_interval: float = field(default=1.0, metadata=meta(positive))
    forward_retry_min: float = field(default=1.0, metadata=meta(positive))
    forward_retry_max: float = field(default=60.0, metadata=meta(positive))
    people_url: str = field(default="", metadata=meta(url_check))
    people_interval: float = field(default=300.0, metadata=meta(positive))
    people_timeout: float = field(default=30.0, metadata=meta(positive))
    people_max_bytes: int = field(default=16 * 1024 * 1024, metadata=meta(positive))
    max_cache_age: float = field(default=0.0, metadata=meta(not_negative))
    stale_cache: Literal["keep", "deny"] = "keep"
    override_people: list[str] = field(default_factory=list)
    token: str = field(default="", metadata=meta(secret=True))
    token_file: str = ""
    ca_file: str = ""

    @property
    def enabled(self) -> bool:
        """Any part of the upstream is configured."""
        return bool(self.url or self.forward_url or self.people_url)


# ----- mqtt -----
def topic_prefix_check(value: str) -> str | None:
    """An MQTT topic prefix: empty (the default) or levels without wildcards."""
    if not value:
        return None
    if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
        return f"{value!r}: no '+', '#', NUL, leading or trailing '/'"
    return None


@dataclass(frozen=True)
class MqttConfig:
    """The broker edged publishes records and states to, and takes commands from (docs/mqtt.md)."""

    host: str = ""
    port: int = 0
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str = field(default="", metadata=meta(secret=True))
    password_file: str = ""
    client_id: str = ""
    topic_prefix: str = field(default="", metadata=meta(topic_prefix_check))
    qos: Literal[1, 2] = 1
    keepalive: int = field(default=30, metadata=meta(positive))
    include_images: bool = False
    window: int = field(default=500, metadata=meta(positive))
    state_interval: float = field(default=1.0, metadata=meta(positive))
    commands: bool = False
    command_secret_file: str = ""
    homeassistant: bool = False
    homeassistant_prefix: str = field(default="homeassistant", metadata=meta(topic_prefix_check))
    homeassistant_commands: bool = False

    @property
    def enabled(self) -> bool:
        """A broker is configured."""
        return bool(self.host)

    @property
    def broker_port(self) -> int:
        """``port``, else 8883 with TLS and 1883 without."""
        return self.port or (8883 if self.tls else 1883)


# ----- web -----
@dataclass(frozen=True)
class WebConfig:
    """The operators' web page on the admin listener (docs/web.md); off unless enabled."""

    enabled: bool = False
    accounts_file: str = ""  # "" -> state_dir/web-accounts.json
    session_minutes: int = field(default=480, metadata=meta(positive))
    login_attempts: int = field(default=5, metadata=meta(positive))  # per minute and address

    def accounts_path(self, state_dir: str) -> Path:
        """The accounts file, ``state_dir/web-accounts.json`` unless set."""
        return Path(self.accounts_file or Path(state_dir) / "web-accounts.json")


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
    terminal_clock: TerminalClockConfig = field(default_factory=TerminalClockConfig)
    terminal_settings: TerminalSettings = field(default_factory=TerminalSettings)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    web: WebConfig = field(default_factory=WebConfig)
    people_sync: PeopleSyncConfig = field(default_factory=PeopleSyncConfig)
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
