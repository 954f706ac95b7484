"""The simulated terminal's clock and settings: ``/v1/device/time``, ``access``, ``system``,
``recognize``, with the guide's fields, ranges and whole-object POST semantics.

A POST replaces the whole object: a required field missing is refused (``code`` 400 under HTTP
200, as the terminal answers a bad request), an optional one omitted goes back to its factory
value, an unknown field is refused (firmware 1.0 has no ``resign_interval``, no Wiegand
settings). Thresholds are kept as the device keeps them, in single precision (0.98 reads back
as 0.9800000190734863). The clock is the simulator's clock plus a skew a test can set
(``sim.config.skew``); ``local_time`` is applied only with ``manual_mode: true``; with
``manual_mode: false`` and a ``server_address`` the terminal takes NTP, which puts the skew back
to 0 when ``SimSettings.ntp_reachable``. Settings and clock survive a reboot (they are flash
and RTC on a real terminal); :meth:`DeviceConfig.factory_reset` loses them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from edged.clock import Clock

Result = tuple[Any, int, str]  # data, code, msg of the answer

ACCESS_DEFAULTS: dict[str, Any] = {  # firmware 1.1 and later (zh tree)
    "open_door_type": 0,
    "keep_door_open_duration": 6,
    "resign_interval": 0,
    "gpio_a": 1,
    "gpio_b": 1,
    "gpio_c": 1,
    "wiegand_settings": {
        "mode": 0,
        "type": 0,
        "card_number": "12345678",
        "pulse_width": 180,
        "pulse_cycle": 2000,
        "reverse_card_number": 0,
    },
    "rfid_settings": {"type": 0},
    "tamper": True,
    "force_open": True,
    "network_relay_address": "127.0.0.1",
    "door_sensor_timeout": 3,
    "serial_port": 0,
    "serial_port_baudrate": 115200,
}
ACCESS_1_0: dict[str, Any] = {  # firmware 1.0 (en tree): no resign_interval, Wiegand input only
    "open_door_type": 0,
    "keep_door_open_duration": 6,
    "gpio_a": 1,
    "gpio_b": 1,
    "gpio_c": 1,
    "wigan_input": 4,
    "tamper": True,
    "force_open": True,
    "network_relay_address": "127.0.0.1",
    "door_sensor_timeout": 3,
}
ACCESS_REQUIRED = (
    "open_door_type",
    "keep_door_open_duration",
    "tamper",
    "force_open",
    "network_relay_address",
    "door_sensor_timeout",
)
SYSTEM_DEFAULTS: dict[str, Any] = {
    "language_type": 1,
    "sound_volume": 80,
    "screen_brightness": 80,
    "auto_reboot": True,
    "reboot_time": "02:00:00",
    "standby_open": True,
    "standby_touch_wakeup": False,
    "wait_time": 1,
    "sleep_time": 3,
    "touch_recognition": False,
    "touch_recognition_return_time": 5,
    "touch_recognition_timeout": 5,
    "short_exposure": 0,
}
RECOGNIZE_DEFAULTS: dict[str, Any] = {
    "use_mode": 3,
    "multi_auth_mode": False,
    "multi_auth_timeout": 3,
    "liveness": True,
    "liveness_threshold": 0.995,
    "verify_threshold": 0.90,
    "certificate_threshold": 0.60,
    "recognition_distance": 2,
    "open_interval": 5,
    "mask_detect": False,
    "no_access_without_mask": False,
    "no_access_with_mask": False,
}
RECOGNIZE_REQUIRED = (
    "use_mode",
    "liveness",
    "liveness_threshold",
    "verify_threshold",
    "certificate_threshold",
    "recognition_distance",
    "open_interval",
    "mask_detect",
)
THRESHOLDS = ("liveness_threshold", "verify_threshold", "certificate_threshold")
NTP_DEFAULT = "ntp.aliyun.com"  # what the guide's example reads back
_TIME_OF_DAY = re.compile(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d")


def float32(value: float) -> float:
    """``value`` as the terminal keeps it (single precision)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def _int(value: Any) -> int | None:
    """An integer, or a string of digits (firmware 1.0 documents strings); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


class DeviceConfig:
    """One simulated terminal's clock and its access, system and recognition settings."""

    def __init__(
        self, version: str, clock: Clock, ntp_reachable: bool = True, skew: float = 0.0
    ) -> None:
        self.old = version == "1.0"
        self.clock = clock
        self.ntp_reachable = ntp_reachable
        self.skew = skew  # seconds the terminal's clock is ahead of the simulator's clock
        self.factory_reset()

    def factory_reset(self) -> None:
        """Every setting back to the factory's; the clock as it is (the RTC keeps running)."""
        self.access: dict[str, Any] = dict(ACCESS_1_0 if self.old else ACCESS_DEFAULTS)
        self.access = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.access.items()}
        self.system: dict[str, Any] = dict(SYSTEM_DEFAULTS)
        self.recognize: dict[str, Any] = {
            k: float32(v) if k in THRESHOLDS else v for k, v in RECOGNIZE_DEFAULTS.items()
        }
        self.manual_mode = False
        self.time_zone = 8
        self.server_address = f"http://{NTP_DEFAULT}" if self.old else NTP_DEFAULT
        self.posts: dict[str, int] = {"time": 0, "access": 0, "system": 0, "recognize": 0}

    def now(self) -> float:
        """The terminal's own clock, epoch seconds."""
        return self.clock.time() + self.skew

    # ----- time -------------------------------------------------------------------------

    def get_time(self, body: dict[str, Any]) -> Result:
        return (
            {
                "local_time": int(self.now() * 1000),
                "manual_mode": self.manual_mode,
                "time_zone": self.time_zone,
                "server_address": self.server_address,
            },
            200,
            "OK",
        )

    def post_time(self, body: dict[str, Any]) -> Result:
        unknown = sorted(set(body) - {"local_time", "manual_mode", "time_zone", "server_address"})
        if unknown:
            return None, 400, f"unknown parameter: {', '.join(unknown)}"
        manual = body.get("manual_mode", False)
        if not isinstance(manual, bool):
            return None, 400, "manual_mode must be true or false"
        zone = _int(body.get("time_zone", self.time_zone))
        if zone is None or not -11 <= zone <= 12:
            return None, 400, "time_zone must be -11..12"
        local = body.get("local_time")
        local_ms = None if local is None else _int(local)
        if local is not None and (local_ms is None or local_ms < 0):
            return None, 400, "local_time must be a unix time in milliseconds"
        server = body.get("server_address", self.server_address)
        if not isinstance(server, str):
            return None, 400, "server_address must be a string"
        if self.old and server and not server.startswith(("http://", "https://")):
            return None, 400, "server_address must start with http:// or https://"
        self.manual_mode, self.time_zone, self.server_address = manual, zone, server
        if manual and local_ms is not None:
            self.skew = local_ms / 1000 - self.clock.time()
        elif not manual and server and self.ntp_reachable:
            self.skew = 0.0  # NTP answered
        self.posts["time"] += 1
        return None, 200, "OK"

    # ----- settings ---------------------------------------------------------------------

    def get_access(self, body: dict[str, Any]) -> Result:
        return _copy(self.access), 200, "OK"

    def post_access(self, body: dict[str, Any]) -> Result:
        problem = _whole(body, ACCESS_1_0 if self.old else ACCESS_DEFAULTS, ACCESS_REQUIRED)
        problem = problem or _access_values(body)
        if problem:
            return None, 400, problem
        defaults = ACCESS_1_0 if self.old else ACCESS_DEFAULTS
        self.access = {**_copy(defaults), **_copy(body)}
        self.posts["access"] += 1
        return None, 200, "OK"

    def get_system(self, body: dict[str, Any]) -> Result:
        return dict(self.system), 200, "OK"

    def post_system(self, body: dict[str, Any]) -> Result:
        problem = _whole(body, SYSTEM_DEFAULTS, ())
        if not problem and not isinstance(body.get("auto_reboot", True), bool):
            problem = "auto_reboot must be true or false"
        reboot_time = body.get("reboot_time", "02:00:00")
        if not problem and not (
            isinstance(reboot_time, str) and _TIME_OF_DAY.fullmatch(reboot_time)
        ):
            problem = "reboot_time must be HH:MM:SS"
        if problem:
            return None, 400, problem
        self.system = {**SYSTEM_DEFAULTS, **body}
        self.posts["system"] += 1
        return None, 200, "OK"

    def get_recognize(self, body: dict[str, Any]) -> Result:
        return dict(self.recognize), 200, "OK"

    def post_recognize(self, body: dict[str, Any]) -> Result:
        problem = _whole(body, RECOGNIZE_DEFAULTS, RECOGNIZE_REQUIRED)
        for key in THRESHOLDS:
            value = body.get(key)
            if not problem and not (
                isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1
            ):
                problem = f"{key} must be between 0 and 1"
        if not problem and not isinstance(body.get("liveness"), bool):
            problem = "liveness must be true or false"
        if problem:
            return None, 400, problem
        merged = {**RECOGNIZE_DEFAULTS, **body}
        self.recognize = {k: float32(v) if k in THRESHOLDS else v for k, v in merged.items()}
        self.posts["recognize"] += 1
        return None, 200, "OK"


def _copy(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in obj.items()}


def _whole(body: dict[str, Any], known: dict[str, Any], required: tuple[str, ...]) -> str | None:
    """A whole object: every required field there, nothing unknown."""
    missing = [k for k in required if k not in body]
    if missing:
        return f"missing required fields: {', '.join(missing)}"
    unknown = sorted(set(body) - set(known))
    if unknown:
        return f"unknown parameter: {', '.join(unknown)}"
    return None


def _access_values(body: dict[str, Any]) -> str | None:
    keep = _int(body.get("keep_door_open_duration"))
    if keep is None or not 1 <= keep <= 30:
        return "keep_door_open_duration must be 1-30"
    for key, high in (("gpio_a", 3), ("gpio_b", 4), ("gpio_c", 4)):
        value = body.get(key, 1)
        if _int(value) is None or not 1 <= int(value) <= high:
            return f"{key} must be 1-{high}"
    for key in ("tamper", "force_open"):
        if not isinstance(body.get(key), bool):
            return f"{key} must be true or false"
    timeout = _int(body.get("door_sensor_timeout"))
    if timeout is None or timeout < 0:
        return "door_sensor_timeout must be a number of seconds"
    resign = body.get("resign_interval", 0)
    if _int(resign) is None or not 0 <= int(resign) <= 1800:
        return "resign_interval must be 0-1800"
    return None


Handler = Callable[[DeviceConfig, dict[str, Any]], Result]
ROUTES: dict[str, Handler] = {
    "GET /v1/device/time": DeviceConfig.get_time,
    "POST /v1/device/time": DeviceConfig.post_time,
    "GET /v1/device/access": DeviceConfig.get_access,
    "POST /v1/device/access": DeviceConfig.post_access,
    "GET /v1/device/system": DeviceConfig.get_system,
    "POST /v1/device/system": DeviceConfig.post_system,
    "GET /v1/device/recognize": DeviceConfig.get_recognize,
    "POST /v1/device/recognize": DeviceConfig.post_recognize,
}
