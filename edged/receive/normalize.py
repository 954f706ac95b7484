"""Turn every payload shape the terminals send into one Event.

Lenient where firmware versions differ (ids as int or string, seconds or milliseconds, unknown
enum values kept as numbers), strict where a value cannot be what it claims (a score that is an
object): that raises PayloadError. Every value of a body must also fit the database: integers
within 64 bits, text valid UTF-8 (no lone surrogates), numbers finite, nesting at most
``MAX_DEPTH`` deep. A body that fails is never stored as valid: from a known terminal it becomes a
MALFORMED record (``malformed()``), stored and acknowledged but never acted on; from anyone else
it is a 400.
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
# SQLite's INTEGER: a value outside it raises OverflowError inside the writer's commit.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_DEPTH = 32  # terminals nest 3 levels; deeper is not a terminal's payload
# Bounds of a malformed record's stored payload: values and characters kept, then "<truncated>".
_MAX_NODES = 2000
_MAX_CHARS = 64 * 1024


def _path(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _int(data: dict[str, Any], key: str, prefix: str) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _whole(value, data, key, prefix)
    if isinstance(value, float) and value.is_integer():
        return _whole(int(value), data, key, prefix)
    # isdecimal, not isdigit: "²" is a digit to str.isdigit but not a number to int()
    digits = value.strip() if isinstance(value, str) else ""
    if digits.lstrip("-").isdecimal() and len(digits) <= 20:
        return _whole(int(digits), data, key, prefix)
    raise PayloadError(f"{_path(prefix, key)}: expected an integer, got {_show(value)}")


def _whole(number: int, data: dict[str, Any], key: str, prefix: str) -> int:
    """``number`` if SQLite can store it as an INTEGER (64 bits), else a PayloadError."""
    if INT_MIN <= number <= INT_MAX:
        return number
    raise PayloadError(f"{_path(prefix, key)}: integer out of range, got {_show(data[key])}")


def _float(data: dict[str, Any], key: str, prefix: str) -> float | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(f"{_path(prefix, key)}: expected a number, got {_show(value)}")
    try:
        number = float(value) if isinstance(value, int | float | str) else math.nan
    except (ValueError, OverflowError):
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
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        return f"an integer of {len(str(abs(value)))} digits"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def check_values(value: Any, where: str = "body", depth: int = 0) -> None:
    """Raise PayloadError unless every value in ``value`` fits the database and the log.

    Refused: a lone surrogate in a key or a string (not UTF-8: SQLite cannot take it), an
    integer outside 64 bits, NaN or Infinity, nesting deeper than MAX_DEPTH.
    """
    if isinstance(value, str):
        if not _utf8(value):
            raise PayloadError(f"{_cut(where)}: not valid UTF-8 text (a lone surrogate)")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise PayloadError(f"{_cut(where)}: integer out of range, got {_show(value)}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadError(f"{_cut(where)}: expected a finite number, got {value}")
    elif depth >= MAX_DEPTH:
        raise PayloadError(f"{_cut(where)}: nested deeper than {MAX_DEPTH} levels")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _utf8(key):
                raise PayloadError(f"{_cut(where)}: a key is not valid UTF-8 (a lone surrogate)")
            check_values(item, _path(where, key) if where != "body" else key, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_values(item, f"{where}[{index}]", depth + 1)


def _cut(where: str) -> str:
    """A field's path, short enough for a message (keys come from the client)."""
    where = _storable(where)
    return where if len(where) <= 80 else where[:77] + "..."


def _utf8(text: str) -> bool:
    """``text`` encodes as UTF-8 (it holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        if isinstance(stamp, int | float) and not isinstance(stamp, bool) and 0 < stamp < 1e15:
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
    check_values(body)
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


# ----- malformed records: a terminal's record that failed validation -------------------------


def malformed(body: Any, header_sn: str | None, problem: str) -> Event | None:
    """A MALFORMED record of ``body`` (a JSON object that failed validation), None without a
    serial to tell whose it is.

    Its payload is kept bounded and storable (``bounded``), without images; its key is
    ``serial:uuid`` when it carries a usable uuid, else a hash of that payload: a re-sent copy
    is a duplicate.
    """
    if not isinstance(body, dict):
        return None
    data = body.get("data") if is_envelope(body) else body
    fields = data if isinstance(data, dict) else {}
    serial = _clean(fields.get("deviceSN")) or _clean(header_sn)
    if serial is None:
        return None
    raw = bounded(body)
    assert isinstance(raw, dict)
    uuid = _clean(fields.get("uuid"))
    key = f"{serial}:{uuid}" if uuid else _hash_key(serial, ["malformed", raw])
    event = Event(kind=Kind.MALFORMED, serial=serial, dedup_key=key, uuid=uuid, raw=raw)
    event.push_type = _loose(_int, body, "type") if is_envelope(body) else None
    event.occurred_at = _loose(_epoch, fields, "timestamp") or _loose(_epoch, fields, "event_time")
    event.problem = problem
    return event


def _clean(value: Any) -> str | None:
    """``value`` if it is short, storable text (a serial or a uuid), else None."""
    if not isinstance(value, str) or not _utf8(value):
        return None
    text = value.strip()
    return text if 0 < len(text) <= 128 else None


def _loose(read: Any, data: dict[str, Any], key: str) -> Any:
    """``read(data, key)``, or None where the value is bad (a malformed record's fields)."""
    try:
        return read(data, key, "")
    except PayloadError:
        return None


def bounded(payload: Any) -> Any:
    """A copy that any check passes: storable, bounded in size, images dropped, PINs redacted.

    Lone surrogates become U+FFFD, integers beyond 64 bits and NaN/Infinity become text,
    strings are cut at 1,024 characters, nesting at MAX_DEPTH, the whole at 2,000 values and
    64 KiB of text.
    """
    return _bounded(payload, 0, [_MAX_NODES, _MAX_CHARS])


def _bounded(value: Any, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0 or budget[1] < 0:
        return "<truncated>"
    if isinstance(value, str):
        budget[1] -= len(value)
        return _storable(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if INT_MIN <= value <= INT_MAX else _show(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, list):
        return [_bounded(item, depth + 1, budget) for item in value]
    if isinstance(value, dict):
        return {_storable(str(k)): _field(k, v, depth, budget) for k, v in value.items()}
    return _storable(str(value))


def _field(key: str, value: Any, depth: int, budget: list[int]) -> Any:
    """One field of a malformed record: images dropped, the PIN redacted."""
    if key in IMAGE_FIELDS and value not in (None, "", " "):
        size = len(value) if isinstance(value, str) else 0
        return f"<{size} base64 chars, dropped>" if size else "<dropped>"
    if key == "pin" and value not in (None, ""):
        return "***"
    return _bounded(value, depth + 1, budget)


def _storable(text: str) -> str:
    """``text`` cut to _MAX_TEXT characters, lone surrogates replaced by U+FFFD."""
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "<cut>"
    if _utf8(text):
        return text
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def image_chars(body: Any) -> int:
    """How many characters of ``body`` are images (a push's or a remote-auth's snapshot)."""
    if not isinstance(body, dict):
        return 0
    data = body.get("data") if is_envelope(body) else body
    fields = data if isinstance(data, dict) else {}
    return sum(len(v) for k, v in fields.items() if k in IMAGE_FIELDS and isinstance(v, str))
