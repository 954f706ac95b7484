"""Turn every payload shape the terminals send into one Event.

Lenient where firmware versions differ (ids as int or string, seconds or milliseconds, unknown
enum values kept as numbers), strict where a value cannot be what it claims (a score that is an
object): that raises PayloadError, answered with a 400 and never stored as valid.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from edged.errors import PayloadError
from edged.model import Event, Kind, User

IMAGE_FIELDS = ("rgb_image", "alarm_photo")
# Values above this are milliseconds: 1e11 seconds is the year 5138.
_MS_THRESHOLD = 1e11
_MAX_TEXT = 1024


def _path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _int(data: dict[str, Any], key: str, prefix: str) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    # isdecimal, not isdigit: "²" is a digit to str.isdigit but not a number to int()
    if isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        return int(value.strip())
    raise PayloadError(f"{_path(prefix, key)}: expected an integer, got {_show(value)}")


def _float(data: dict[str, Any], key: str, prefix: str) -> float | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(f"{_path(prefix, key)}: expected a number, got {_show(value)}")
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise PayloadError(f"{_path(prefix, key)}: expected a number, got {_show(value)}")
    return number


def _bool(data: dict[str, Any], key: str, prefix: str) -> bool | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise PayloadError(f"{_path(prefix, key)}: expected true or false, got {_show(value)}")


def _text(data: dict[str, Any], key: str, prefix: str) -> str | None:
    """A string field; numbers are accepted (old firmware sends card numbers as ints)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PayloadError(f"{_path(prefix, key)}: expected a string, got {_show(value)}")
    text = str(value).strip()
    if len(text) > _MAX_TEXT:
        raise PayloadError(f"{_path(prefix, key)}: longer than {_MAX_TEXT} characters")
    return text or None


def _epoch(data: dict[str, Any], key: str, prefix: str) -> float | None:
    """A timestamp in seconds, whether the terminal sent seconds or milliseconds."""
    value = _float(data, key, prefix)
    if value is None or value <= 0:
        return None
    return value / 1000.0 if value > _MS_THRESHOLD else value


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _user(data: dict[str, Any], prefix: str) -> User | None:
    raw = data.get("user")
    if raw is None or raw == "" or raw == {}:
        return None
    if not isinstance(raw, dict):
        raise PayloadError(f"{_path(prefix, 'user')}: expected an object, got {_show(raw)}")
    where = _path(prefix, "user")
    groups_raw = raw.get("groups") or []
    if not isinstance(groups_raw, list):
        raise PayloadError(f"{where}.groups: expected a list, got {_show(groups_raw)}")
    groups = []
    for group in groups_raw:
        if isinstance(group, dict):
            name = _text(group, "name", f"{where}.groups") or _text(group, "id", f"{where}.groups")
            if name:
                groups.append(name)
    user = User(
        user_id=_text(raw, "user_id", where),
        name=_text(raw, "name", where),
        type=_int(raw, "type", where),
        ic_number=_text(raw, "ic_number", where),
        job_number=_text(raw, "job_number", where),
        id_number=_text(raw, "id_number", where),
        guest_start=_epoch(raw, "guest_time_start", where),
        guest_end=_epoch(raw, "guest_time_end", where),
        groups=groups,
        has_pin=bool(raw.get("pin")),
    )
    identity = (user.user_id, user.name, user.ic_number, user.job_number, user.id_number)
    return None if all(v is None for v in identity) else user


def sanitize(payload: Any) -> Any:
    """A copy for storage: images replaced by their size, PINs redacted."""
    if isinstance(payload, dict):
        out: dict[str, Any] = {}
        for key, value in payload.items():
            if key in IMAGE_FIELDS and isinstance(value, str):
                out[key] = f"<{len(value)} base64 chars>" if value.strip() else value
            elif key == "pin" and value not in (None, ""):
                out[key] = "***"
            else:
                out[key] = sanitize(value)
        return out
    if isinstance(payload, list):
        return [sanitize(v) for v in payload]
    return payload


def _image(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"data.{key}: expected a base64 string, got {_show(value)}")
    return value if value.strip() else None


def _hash_key(serial: str, parts: list[Any]) -> str:
    blob = json.dumps([serial, *parts], separators=(",", ":"), default=str).encode()
    return f"{serial}:h:{hashlib.sha256(blob).hexdigest()[:32]}"


def _serial(data: dict[str, Any], header_sn: str | None, prefix: str) -> str:
    serial = _text(data, "deviceSN", prefix) or (header_sn or "").strip()
    if not serial:
        raise PayloadError(f"{_path(prefix, 'deviceSN')}: required (terminal serial)")
    return serial


def _recognition(data: dict[str, Any], kind: Kind, serial: str, prefix: str) -> Event:
    user = _user(data, prefix)
    event = Event(
        kind=kind,
        serial=serial,
        dedup_key="",
        uuid=_text(data, "uuid", prefix),
        occurred_at=_epoch(data, "timestamp", prefix),
        recognition_type=_int(data, "recognitionType", prefix),
        recognize_status=_int(data, "recognizeStatus", prefix),
        score=_float(data, "recognizeScore", prefix),
        liveness_score=_float(data, "livenessScore", prefix),
        mask=_int(data, "mask", prefix),
        mode=_int(data, "mode", prefix),
        entry_mode=_int(data, "entry_mode", prefix),
        abnormal_type=_int(data, "abnormal_type", prefix),
        terminal_pass=_bool(data, "pass", prefix),
        temperature=_float(data, "bodyTemperature", prefix),
        qrcode=_text(data, "qrcode_content", prefix),
        user=user,
        image_b64=_image(data, "rgb_image"),
    )
    old = "recognitionType" not in data and ("recognizeStatus" in data or "uuid" not in data)
    event.firmware = "old" if old else "new"
    if event.uuid:
        event.dedup_key = f"{serial}:{event.uuid}"
    else:
        event.dedup_key = _hash_key(
            serial,
            [
                kind.value,
                data.get("timestamp"),
                user.user_id if user else None,
                event.recognize_status,
                event.recognition_type,
                data.get("recognizeScore"),
                event.entry_mode,
                event.mode,
                event.qrcode,
                event.terminal_pass,
            ],
        )
    return event


def _alarm(data: dict[str, Any], serial: str) -> Event:
    prefix = "data"
    event = Event(
        kind=Kind.ALARM,
        serial=serial,
        dedup_key="",
        trace_id=_text(data, "trace_id", prefix),
        description=_text(data, "description", prefix),
        alarm_code=_int(data, "code", prefix),
        alarm_status=_int(data, "status", prefix),
        occurred_at=_epoch(data, "event_time", prefix),
        image_b64=_image(data, "alarm_photo"),
    )
    uid = _text(data, "user_id", prefix)
    event.user = User(user_id=uid) if uid else None
    if event.trace_id:
        event.dedup_key = f"{serial}:alarm:{event.trace_id}:{event.alarm_status}"
    else:
        event.dedup_key = _hash_key(
            serial, ["alarm", data.get("event_time"), event.alarm_code, event.alarm_status, uid]
        )
    return event


def _other(envelope: dict[str, Any], push_type: int, header_sn: str | None) -> Event:
    data = envelope.get("data")
    serial = ""
    if isinstance(data, dict):
        value = data.get("deviceSN")
        serial = value.strip() if isinstance(value, str) else ""
    serial = serial or (header_sn or "").strip()
    if not serial:
        raise PayloadError("data.deviceSN: required (terminal serial)")
    event = Event(kind=Kind.OTHER, serial=serial, dedup_key="")
    if isinstance(data, dict):
        event.uuid = data.get("uuid") if isinstance(data.get("uuid"), str) else None
        stamp = data.get("timestamp", data.get("event_time"))
        if isinstance(stamp, int | float) and not isinstance(stamp, bool) and stamp > 0:
            event.occurred_at = stamp / 1000.0 if stamp > _MS_THRESHOLD else float(stamp)
    if event.uuid:
        event.dedup_key = f"{serial}:{event.uuid}"
    else:
        event.dedup_key = _hash_key(serial, ["other", push_type, sanitize(data)])
    return event


def is_envelope(body: Any) -> bool:
    """A push envelope ``{type, data}`` rather than a flat remote-auth request."""
    return isinstance(body, dict) and "type" in body and "data" in body


def normalize(body: Any, header_sn: str | None = None) -> Event:
    """One Event from a push envelope or a flat remote-auth request."""
    if not isinstance(body, dict):
        raise PayloadError(f"body: expected a JSON object, got {_show(body)}")
    if is_envelope(body):
        push_type = _int(body, "type", "")
        if push_type is None:
            raise PayloadError("type: required")
        data = body["data"]
        if push_type in (0, 1) and not isinstance(data, dict):
            raise PayloadError(f"data: expected an object, got {_show(data)}")
        if push_type == 0:
            event = _recognition(data, Kind.RECOGNITION, _serial(data, header_sn, "data"), "data")
        elif push_type == 1:
            event = _alarm(data, _serial(data, header_sn, "data"))
        else:
            event = _other(body, push_type, header_sn)
        event.push_type = push_type
    else:
        event = _recognition(body, Kind.AUTH, _serial(body, header_sn, ""), "")
        event.firmware = "new" if "recognitionType" in body else "old"
    event.raw = sanitize(body)
    return event
