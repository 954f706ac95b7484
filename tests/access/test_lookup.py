"""The view loader on a real SQLite file: right rows, and index lookups only."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edged.access import lookup, people
from edged.decide import policy
from edged.decide.policy import SITE
from edged.model import Event, Kind, User
from edged.store import events as store
from edged.store import queries

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 24, 10, 0, tzinfo=BERLIN).timestamp()

DOC: dict[str, Any] = {
    "people": [
        {"id": "e-1", "name": "Ann", "ic_number": "1001", "groups": "staff|night"},
        {"id": "e-2", "name": "Bob", "qr": "Q-2", "groups": "visitors"},
    ],
    "groups": [{"id": "staff", "name": "Staff"}, {"id": "security"}],
    "schedules": [
        {"id": "office", "periods": [{"days": ["mon", "tue"], "start": "08:00", "end": "18:00"}]},
        {"id": "late", "periods": [{"days": "thu", "start": "22:00", "end": "02:00"}]},
    ],
    "holidays": [
        {"name": "Christmas Eve", "date": "12-24"},
        {"name": "Inventory", "date": "2026-12-23", "kind": "closed"},
        {"name": "Summer", "date": "07-01"},
    ],
    "doors": [{"name": "lobby", "min_score": 0.8, "entry_modes": [1, 3], "anti_passback": 30}],
    "permissions": [
        {"group": "staff", "door": "lobby", "schedule": "office"},
        {"group": "night", "door": "lobby", "schedule": "late"},
        {"group": "staff", "door": "garage"},
        {"group": "visitors", "door": "garage"},
    ],
}


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    db = store.open_database(tmp_path / "edged.db")
    people.apply_document(db.conn, people.parse_document(DOC, BERLIN), replace=False)
    yield db.conn
    db.conn.close()


def auth(**user: Any) -> Event:
    return Event(Kind.AUTH, "S1", "k", occurred_at=NOW, user=User(**user), firmware="old")


def test_view_holds_what_the_decision_needs(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO modes (scope, lockdown, override_group) VALUES (?, 1, 'security')", (SITE,)
    )
    door, view = lookup.load(conn, auth(user_id="nobody", ic_number="1001"), "lobby", NOW, BERLIN)
    assert view.person is not None and view.person.id == "e-1"
    assert view.groups == {"staff", "night"}
    assert {p.rule for p in view.permissions} == {
        "permission:staff@lobby/office",
        "permission:night@lobby/late",
    }
    assert set(view.schedules) == {"office", "late"}
    assert [h.name for h in view.holidays] == ["Inventory", "Christmas Eve"]  # yesterday, today
    assert door.min_score == 0.8 and door.entry_modes == {1, 3} and door.anti_passback == 30
    assert view.site_mode is not None and view.site_mode.override_group == "security"
    assert view.door_mode is None and view.last_pass is None


def test_qr_credential_and_unknown_door_defaults(conn: sqlite3.Connection) -> None:
    event = Event(Kind.AUTH, "S1", "k", occurred_at=NOW, qrcode="Q-2", firmware="old")
    door, view = lookup.load(conn, event, "garage", NOW, BERLIN)
    assert view.person is not None and view.person.id == "e-2"
    assert door == policy.DoorSettings("garage")
    assert [p.rule for p in view.permissions] == ["permission:visitors@garage/always"]


def test_last_pass_reads_granted_decisions_at_this_door(conn: sqlite3.Connection) -> None:
    rows = [
        ("a", "e-1", "lobby", "pass", NOW - 100),
        ("b", "e-1", "lobby", "deny", NOW - 5),
        ("c", "e-1", "garage", "pass", NOW - 1),
        ("d", "e-1", "lobby", "pass", NOW - 50),
    ]
    for key, person, door, decision, at in rows:
        conn.execute(
            "INSERT INTO events (dedup_key, kind, serial, received_at, person_id, door, "
            "decision, response, raw) VALUES (?, 'auth', 'S1', ?, ?, ?, ?, '{}', '{}')",
            (key, at, person, door, decision),
        )
    assert queries.last_pass(conn, "e-1", "lobby") == NOW - 50
    _, view = lookup.load(conn, auth(user_id="e-1"), "lobby", NOW, BERLIN)
    assert view.last_pass == NOW - 50


def test_a_decision_reads_by_index_only(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO modes (scope, free_access, free_schedule) VALUES ('lobby', 1, 'late')"
    )
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    lookup.load(conn, auth(user_id="x", ic_number="1001"), "lobby", NOW, BERLIN)
    conn.set_trace_callback(None)
    assert len(statements) >= 8
    for sql in statements:
        plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        scans = [part for part in plan.split(" | ") if part.startswith("SCAN")]
        assert not scans, f"{sql}\n  {plan}"


def test_free_access_for_the_door_driver(conn: sqlite3.Connection) -> None:
    assert not lookup.free_access_now(conn, "lobby", NOW, BERLIN)
    conn.execute(
        "INSERT INTO modes (scope, free_access, free_schedule) VALUES ('lobby', 1, 'office')"
    )
    monday_noon = datetime(2026, 12, 21, 12, 0, tzinfo=BERLIN).timestamp()
    assert lookup.free_access_now(conn, "lobby", monday_noon, BERLIN)
    assert not lookup.free_access_now(conn, "lobby", NOW, BERLIN)  # Thursday: office is closed
    assert not lookup.free_access_now(conn, "garage", monday_noon, BERLIN)
    conn.execute("INSERT INTO modes (scope, lockdown) VALUES ('*', 1)")
    assert not lookup.free_access_now(conn, "lobby", monday_noon, BERLIN)
