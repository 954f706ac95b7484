"""Topics and payloads: records, door and terminal states, modes (docs/mqtt.md).

Every payload is compact JSON (UTF-8). A record's message carries its key (``events.dedup_key``)
and id: a consumer drops a second copy by its key (a reconnect may send a record again).
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

from edged.config import Config

# What a record's message holds (the events table's columns; no raw payload, no image bytes).
COLUMNS = (
    "id, dedup_key, kind, push_type, serial, terminal, occurred_at, received_at, user_id, "
    "user_name, person_id, replayed, replay_reason, decision, reason, rule, source, door, "
    "door_outcome, image_path, image_offset, image_bytes"
)
# The HA event entity's types (docs/mqtt.md): a pass, a deny, an alarm, any other record.
EVENT_TYPES = ("pass", "deny", "alarm", "record")


def slug(text: str) -> str:
    """A topic level or identifier from a name: lower case, digits, ``_`` and ``-``."""
    value = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_")
    return value or "edged"


class Topics:
    """The topic layout under ``mqtt.topic_prefix`` (default ``edged/<site name>``)."""

    def __init__(self, cfg: Config) -> None:
        self.gateway = slug(cfg.site.name)
        self.prefix = cfg.mqtt.topic_prefix or f"edged/{self.gateway}"
        self.client_id = cfg.mqtt.client_id or f"edged-{self.gateway}"
        self.availability = f"{self.prefix}/availability"
        self.records = f"{self.prefix}/records"
        self.modes = f"{self.prefix}/modes"
        self.lockdown = f"{self.prefix}/lockdown"
        self.commands = f"{self.prefix}/commands"
        self.replies = f"{self.prefix}/replies"
        self.ha_lockdown_set = f"{self.prefix}/ha/lockdown/set"
        self.ha_door_set = f"{self.prefix}/ha/doors/+/set"

    def door(self, name: str, what: str) -> str:
        """``state``, ``last_access`` or ``event`` of a door."""
        return f"{self.prefix}/doors/{name}/{what}"

    def terminal(self, name: str) -> str:
        return f"{self.prefix}/terminals/{name}/state"

    def ha_door(self, name: str) -> str:
        return f"{self.prefix}/ha/doors/{name}/set"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def iso(at: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (what Home Assistant's timestamp sensor reads)."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def record(row: sqlite3.Row, gateway: str, image: str | None) -> dict[str, Any]:
    """One stored record as its message (docs/mqtt.md, "Records")."""
    out = {
        "key": row["dedup_key"],
        "id": row["id"],
        "gateway": gateway,
        "kind": row["kind"],
        "push_type": row["push_type"],
        "terminal": row["terminal"],
        "serial": row["serial"],
        "door": row["door"],
        "occurred_at": iso(row["occurred_at"]),
        "received_at": iso(row["received_at"]),
        "user_id": row["user_id"],
        "user_name": row["user_name"],
        "person_id": row["person_id"],
        "decision": row["decision"],
        "reason": row["reason"],
        "rule": row["rule"],
        "source": row["source"],
        "door_outcome": row["door_outcome"],
        "replayed": bool(row["replayed"]),
        "replay_reason": row["replay_reason"],
    }
    if image is not None:
        out["image"] = image
    return out


def event_type(message: dict[str, Any]) -> str:
    """The HA event type of a record's message."""
    if message["decision"] in ("pass", "deny"):
        return str(message["decision"])
    return "alarm" if message["kind"] == "alarm" else "record"


def door_event(message: dict[str, Any]) -> dict[str, Any]:
    """A door's event message (HA event entity): the record's type and its main facts."""
    keep = ("key", "id", "kind", "terminal", "person_id", "user_name", "decision", "reason")
    return {"event_type": event_type(message), **{k: message[k] for k in keep}}


def last_access(message: dict[str, Any]) -> dict[str, Any]:
    """A door's last access (retained; HA timestamp sensor with these attributes)."""
    keep = ("key", "id", "terminal", "person_id", "user_name", "decision", "reason")
    return {"at": message["occurred_at"] or message["received_at"], **{k: message[k] for k in keep}}


def door_state(door: dict[str, Any], lockdown: bool, fire: bool) -> dict[str, Any]:
    """A door's retained state from ``Doors.status()`` (the lock output, contact, holds)."""
    return {
        "name": door["name"],
        "locked": door["locked"],
        "lock": "LOCKED" if door["locked"] else "UNLOCKED",
        "why": door["why"],
        "contact": door["contact"],
        "holds": sorted(door["holds"]),
        "alarms": [a["kind"] for a in door["alarms"]],
        "lockdown": lockdown,
        "fire": fire,
    }


def terminal_state(
    name: str, serial: str, seen: Any, health: dict[str, Any] | None, now: float, timeout: float
) -> dict[str, Any]:
    """A terminal's retained state: online when heard within the heartbeat timeout."""
    last = max(
        (t for t in (getattr(seen, "last_heartbeat", None), getattr(seen, "last_push", None)) if t),
        default=None,
    )
    online = last is not None and now - last <= timeout
    if health is not None:
        online = online or health.get("state") == "registered"
    return {
        "name": name,
        "serial": serial,
        "online": online,
        "state": "ON" if online else "OFF",
        "last_heard": iso(last),
        "managed": health is not None,
        "health": health.get("state") if health else None,
    }
