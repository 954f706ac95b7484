"""The store's named reads and writes round-trip on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.store import doorlog, outbox, presence, queries
from edged.store import events as store


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Any]:
    c = store.open_connection(tmp_path / "p.db")
    yield c
    c.close()


def test_pins_first_contact_wins_and_an_operator_repins(conn: Any) -> None:
    presence.pin_first(conn, "SN1", "192.0.2.1", "first-seen", 10.0)
    presence.pin_first(conn, "SN1", "192.0.2.9", "first-seen", 11.0)
    assert presence.pinned_address(conn, "SN1") == "192.0.2.1"
    presence.pin(conn, "SN1", "192.0.2.5", "operator", 12.0)
    assert presence.pin_info(conn, "SN1") == ("192.0.2.5", 12.0, "operator")
    assert presence.pinned_serials(conn, "192.0.2.5") == ["SN1"]
    assert presence.pinned_address(conn, "SN2") is None


def test_seen_keeps_the_other_kind_of_contact(conn: Any) -> None:
    presence.mark_seen(conn, ("SN1", "192.0.2.1", 10.0, 10.0, None))
    presence.mark_seen(conn, ("SN1", "192.0.2.2", 20.0, None, 20.0))
    assert presence.seen_all(conn) == [("SN1", "192.0.2.2", 20.0, 10.0, 20.0)]
    assert presence.last_seen_address(conn, "SN1") == "192.0.2.2"


def test_refused_requests_are_bounded(conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presence, "KEEP_REFUSED", 2)
    for i in range(4):
        presence.record_refused(conn, (float(i), "192.0.2.7", "SN1", "lobby", "/p", "-", ""))
    summary = presence.refused_summary(conn, 0.0)
    assert summary["count"] == 2 and summary["latest"]["at"] == 3.0
    assert presence.refused_by_terminal(conn, 2.0) == {"SN1": 2}


def test_trust_and_sync(conn: Any) -> None:
    presence.trust(conn, "SN1", "lobby", "AA:BB", "CN=x", 5.0)
    presence.trust(conn, "SN1", "lobby", "CC:DD", "CN=y", 6.0)
    assert presence.trusted_fingerprint(conn, "SN1") == "CC:DD"
    assert presence.synced_until(conn, "SN1") is None
    presence.mark_synced(conn, "SN1", 100.0, registered=True)
    presence.mark_synced(conn, "SN1", 200.0, registered=False)
    assert presence.synced_until(conn, "SN1") == 200.0
    row = conn.execute("SELECT registered_at FROM terminal_sync").fetchone()
    assert row[0] == 100.0


def test_door_log_pages_and_prunes(conn: Any) -> None:
    for at, door in ((1.0, "lobby"), (2.0, "garage"), (3.0, "lobby")):
        doorlog.insert(conn, (at, door, "unlock", "test", json.dumps({})))
    assert [r["at"] for r in doorlog.page(conn, 0, "lobby", 10)] == [1.0, 3.0]
    assert [r["id"] for r in doorlog.page(conn, 1, None, 1)] == [2]
    assert doorlog.prune(conn, 2.5) == 2


def _event(conn: Any, key: str, **columns: Any) -> int:
    values = {"dedup_key": key, "kind": "recognition", "serial": "SN1", "received_at": 1.0}
    values["response"] = "{}"
    values |= {"raw": "{}", **columns}
    names = ",".join(values)
    marks = ",".join("?" * len(values))
    cur = conn.execute(f"INSERT INTO events ({names}) VALUES ({marks})", list(values.values()))
    return int(cur.lastrowid)


def test_event_reads(conn: Any) -> None:
    first = _event(conn, "a", terminal="lobby", person_id="e-1", door="lobby", decision="pass")
    second = _event(conn, "b", terminal="garage", door_outcome="refused: lockdown")
    rows = queries.events_after(conn, "id, terminal", 0, 10, {"terminal": "garage"})
    assert [r["id"] for r in rows] == [second]
    assert [r["id"] for r in queries.events_after(conn, "id", first, 10, {}, since=1.0)] == [second]
    with pytest.raises(ValueError, match="filterable"):
        queries.events_after(conn, "id", 0, 10, {"raw": "x"})
    assert queries.decision(conn, first)["decision"] == "pass"  # type: ignore[index]
    assert queries.decision(conn, 999) is None
    assert queries.door_outcome(conn, second) == "refused: lockdown"
    assert queries.snapshot_place(conn, first)["image_path"] is None  # type: ignore[index]
    assert queries.last_pass(conn, "e-1", "lobby") == 1.0


def test_outbox_cursor_and_waiting(conn: Any) -> None:
    ids = [_event(conn, k, received_at=float(n)) for n, k in enumerate("abc", start=1)]
    assert outbox.cursor(conn) == 0
    outbox.advance(conn, ids[0], 1, 50.0)
    outbox.advance(conn, 0, 0, 51.0)  # never backwards
    assert outbox.cursor(conn) == ids[0]
    assert [r["id"] for r in outbox.waiting(conn, "id", 10)] == ids[1:]
    status = outbox.status(conn, 10.0)
    assert (status["depth"], status["oldest_id"], status["batches"]) == (2, ids[1], 2)
