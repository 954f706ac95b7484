"""How a stored decision was reached: the steps the engine wrote at decision time.

The steps are stored with the event (column ``explain``, a JSON list of strings) rather than
recomputed: people, schedules and modes change afterwards, and the explanation must tell what
the engine saw then, not what it would decide now.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from edged.errors import NotFoundError
from edged.store import queries


def steps(raw: str | None) -> list[str]:
    """The stored steps of a decision (empty for records that were not decided)."""
    if not raw:
        return []
    value = json.loads(raw)
    return [str(v) for v in value] if isinstance(value, list) else []


def lines(conn: sqlite3.Connection, event_id: int) -> list[str]:
    """The explanation of one stored event, ready to print."""
    record = queries.decision(conn, event_id)
    if record is None:
        raise NotFoundError(f"no event {event_id}")
    when = datetime.fromtimestamp(record["received_at"], UTC).isoformat(timespec="seconds")
    head = (
        f"event {record['id']} ({record['kind']}) at {when} from {record['terminal'] or '-'} "
        f"door {record['door'] or '-'}"
    )
    if not record["decision"]:
        return [head, "not a decision: only remote-auth requests are decided"]
    out = [
        head,
        f"decision: {record['decision']} ({record['reason']}), rule {record['rule']}, "
        f"decided by {record['source'] or 'cache'}",
    ]
    found = steps(record["explain"])
    if not found:
        out.append("no steps stored (decided before explanations were recorded)")
    elif record["source"] == "upstream" and not any(s.startswith("upstream ") for s in found):
        out.append("the upstream decided; the cache's steps below were not used")
    out.extend(f"  {i}. {step}" for i, step in enumerate(found, start=1))
    door = door_line(conn, event_id)
    if door:
        out.append(door)
    return out


def door_line(conn: sqlite3.Connection, event_id: int) -> str | None:
    """What the door did with a stored decision (edged/doors/control.py); None when it had no part.

    A grant the door did not carry out says so: ``granted, door refused: lockdown``.
    """
    outcome = queries.door_outcome(conn, event_id)
    if not outcome:
        return None
    if outcome.startswith("refused"):
        return f"door: granted, door {outcome}"
    return f"door: {outcome} for this decision"
