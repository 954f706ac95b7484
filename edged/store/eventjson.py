"""A stored event as the admin API and the CLI show it: its columns, ISO times, JSON fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

EVENT_COLUMNS = (
    "id, kind, push_type, serial, terminal, uuid, occurred_at, received_at, user_id, user_name, "
    "person_id, recognition, recognize_status, score, entry_mode, terminal_pass, alarm_code, "
    "alarm_status, trace_id, replayed, replay_reason, decision, reason, rule, source, duplicates, "
    "image_path, door, upstream_error, door_outcome"
)


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``...Z``); None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_json(row: Any, with_raw: bool = False) -> dict[str, Any]:
    """One stored event as the API shows it."""
    out = dict(row)
    out["occurred_at"] = iso(out["occurred_at"])
    out["received_at"] = iso(out["received_at"])
    out["replayed"] = bool(out["replayed"])
    # the snapshot's place inside a segment means nothing outside: show where to fetch it
    out["image"] = f"/api/v1/events/{out['id']}/snapshot" if out.pop("image_path") else None
    if out.get("terminal_pass") is not None:
        out["terminal_pass"] = bool(out["terminal_pass"])
    if with_raw and "raw" in out:
        out["raw"] = json.loads(out["raw"])
        out["response"] = json.loads(out["response"])
    return out
