"""The door audit never claims a door opened that did not (gpiozero MockFactory, real SQLite).

A grant's door-log row rides in its record's commit, before the lock moves; a mode switch acts on
the doors before the command returns; a grant the door refused says so in ``events`` and ``why``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from edged.cli import main as cli
from edged.config import Config
from edged.decide import explain
from edged.doors import control as doors
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from tests.conftest import LiveDaemon, asgi_client, auth_request, grant_person

pytestmark = pytest.mark.anyio

SERIAL = "PS71HD01MC22C00099"
LOCK = 17

DOOR_TOML = f"""
[gpio]
pin_factory = "mock"

[[terminals]]
name = "lobby-door"
serial = "{SERIAL}"
door = "lobby"

[[doors]]
name = "lobby"
lock = {{ pin = {LOCK} }}
unlock_time = 5
"""


class WitnessPin(MockPin):  # type: ignore[misc]
    """A mock pin that calls ``witness(level)`` as its level is about to change."""

    witness: Callable[[bool], None] | None = None

    def _change_state(self, value: bool) -> bool:
        if self.witness is not None and value != self._state:
            self.witness(bool(value))
        return bool(super()._change_state(value))


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows read from the SQLite file through a connection of their own."""
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def door_log(path: Path) -> list[tuple[str, dict[str, Any]]]:
    found = rows(path, "SELECT action, detail FROM door_log WHERE door = 'lobby' ORDER BY id")
    return [(action, json.loads(detail)) for action, detail in found]


def lock(factory: MockFactory) -> Any:
    return factory.pin(LOCK)


@pytest.fixture
def lock_cfg(make_config: Callable[..., Config], mock_factory: MockFactory) -> Config:
    mock_factory.pin(LOCK, pin_class=WitnessPin)  # before the door claims it
    return make_config(DOOR_TOML)


@pytest.fixture
async def rig(lock_cfg: Config) -> AsyncIterator[tuple[doors.Doors, Receiver]]:
    """The door attached to the running loop, a receiver that feeds it, a real SQLite file."""
    st = store.Store(lock_cfg.storage.database_path)
    site = doors.build(lock_cfg, st)
    assert site is not None
    site.attach(asyncio.get_running_loop())
    rec = Receiver(lock_cfg, st)
    rec.listeners.append(site.on_record)
    grant_person(st.path, door="lobby")
    yield site, rec
    site.close()
    st.close()


async def grant(rec: Receiver) -> dict[str, Any]:
    async with asgi_client(create_app(rec)) as client:
        answer = await client.post("/auth", json=auth_request(serial=SERIAL))
    body: dict[str, Any] = answer.json()
    return body


# ----- item: the opening is on disk before the lock moves ------------------------------------


async def test_grant_row_is_committed_before_the_lock_moves(
    rig: tuple[doors.Doors, Receiver], mock_factory: MockFactory
) -> None:
    _, rec = rig
    path = rec.store.path
    seen: list[tuple[bool, list[tuple[Any, ...]]]] = []
    sql = "SELECT action, json_extract(detail, '$.event') FROM door_log WHERE door = 'lobby'"

    def witness(level: bool) -> None:  # what another process would find on disk right now
        seen.append((level, rows(path, sql)))

    lock(mock_factory).witness = witness
    assert (await grant(rec))["data"]["pass"] is True
    assert lock(mock_factory).state is True  # unlocked before the answer left
    event_id = rows(path, "SELECT id FROM events")[0][0]
    assert seen == [(True, [("grant", event_id)])]
    assert rows(path, "SELECT door_outcome FROM events") == [("unlocked",)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_daemon(cfg_file: Path, log_file: Path) -> subprocess.Popen[bytes]:
    """``edged run`` in a process of its own, once it says it is ready."""
    env = {**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}
    ready = log_file.read_text().count("edged ready") if log_file.exists() else 0
    with log_file.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "-c", str(cfg_file)], stderr=err, env=env
        )
    deadline = time.monotonic() + 30
    while log_file.read_text().count("edged ready") <= ready:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"edged did not start: {log_file.read_text()[-2000:]}")
        time.sleep(0.02)
    return proc


def grant_until_killed(port: int, prefix: str, answered: list[str]) -> None:
    """Send grants one after another until the daemon dies (at most 500)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for i in range(500):
            body = auth_request(serial=SERIAL, uuid=f"{prefix}-{i}")
            try:
                reply = client.post("/auth", json=body).json()
            except httpx.HTTPError:
                return
            assert reply["data"]["pass"] is True
            answered.append(body["uuid"])


def test_kill_9_among_grants_loses_no_grant_row(tmp_path: Path) -> None:
    """A real daemon SIGKILLed while grants are in flight, three times over: every granted
    record on disk has its door-log row, and every answered grant is on disk."""
    port = free_port()
    state = tmp_path / "state"
    cfg_file = tmp_path / "edged.toml"
    cfg_file.write_text(
        f'[site]\ntimezone = "UTC"\n[receiver]\nlisten = ["127.0.0.1:{port}"]\n'
        f'allowed_networks = ["127.0.0.0/8"]\n[admin]\nlisten = ["127.0.0.1:{free_port()}"]\n'
        f'[storage]\nstate_dir = "{state}"\n' + DOOR_TOML
    )
    db = state / "edged.db"
    store.open_database(db).conn.close()
    grant_person(db, door="lobby")
    answered: list[str] = []
    for cycle in range(3):
        proc = start_daemon(cfg_file, tmp_path / "edged.log")
        before = len(answered)
        senders = [
            threading.Thread(target=grant_until_killed, args=(port, f"k{cycle}-{n}", answered))
            for n in range(4)
        ]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while len(answered) < before + 40 and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for sender in senders:
            sender.join(15)
    granted = rows(db, "SELECT id, uuid FROM events WHERE decision = 'pass' AND replayed = 0")
    logged = rows(db, "SELECT json_extract(detail, '$.event') FROM door_log WHERE action = 'grant'")
    assert len(answered) >= 120
    assert set(answered) <= {uuid for _, uuid in granted}  # nothing answered is lost
    assert sorted(e for (e,) in logged) == sorted(e for e, _ in granted)


async def test_duplicate_and_replayed_grants_write_no_row_and_do_not_move(
    rig: tuple[doors.Doors, Receiver], mock_factory: MockFactory
) -> None:
    _, rec = rig
    body = auth_request(serial=SERIAL)
    stale = auth_request(serial=SERIAL, ts=time.time() - 3600)
    async with asgi_client(create_app(rec)) as client:
        for payload in (body, body, stale):
            await client.post("/auth", json=payload)
    assert [a for a, _ in door_log(rec.store.path) if a.startswith("grant")] == ["grant"]
    assert [bool(s.state) for s in lock(mock_factory).states] == [False, True]


# ----- item: a grant the door refused says so --------------------------------------------------


async def test_grant_refused_by_the_door_says_so_in_events_and_why(
    rig: tuple[doors.Doors, Receiver], mock_factory: MockFactory
) -> None:
    site, rec = rig
    site.set_lockdown(True, "test")  # the doors hold lockdown, the database does not
    assert (await grant(rec))["data"]["pass"] is True  # the decision read no lockdown
    assert [bool(s.state) for s in lock(mock_factory).states] == [False]
    event_id = rows(rec.store.path, "SELECT id FROM events")[0][0]
    refused = [d for a, d in door_log(rec.store.path) if a == "grant_refused"]
    assert refused == [{"person": "e-1", "why": "lockdown", "event": event_id}]
    assert "grant" not in [a for a, _ in door_log(rec.store.path)]
    lines = explain.lines(rec.store.db.conn, event_id)
    assert "door: granted, door refused: lockdown" in lines
    row = rows(rec.store.path, "SELECT decision, door_outcome FROM events")
    assert row == [("pass", "refused: lockdown")]


async def test_lockdown_between_decision_and_commit_keeps_the_door_locked(
    rig: tuple[doors.Doors, Receiver], mock_factory: MockFactory
) -> None:
    """The reverse race: the door said yes, then lockdown reached it before the commit."""
    site, rec = rig
    rec.store.before_commit.append(lambda record: site.set_lockdown(True, "test"))
    assert (await grant(rec))["data"]["pass"] is True
    assert [bool(s.state) for s in lock(mock_factory).states] == [False]
    await rec.store.run(lambda conn: None)  # the queued refusal and correction are before it
    actions = [a for a, _ in door_log(rec.store.path) if a.startswith("grant")]
    assert actions == ["grant", "grant_refused"]
    event_id = rows(rec.store.path, "SELECT id FROM events")[0][0]
    assert "door: granted, door refused: lockdown" in explain.lines(rec.store.db.conn, event_id)


async def test_doors_stopping_while_a_grant_commits_say_it_was_not_carried_out(
    rig: tuple[doors.Doors, Receiver], mock_factory: MockFactory
) -> None:
    site, rec = rig
    rec.store.before_commit.append(lambda record: site.close())
    await grant(rec)
    assert [bool(s.state) for s in lock(mock_factory).states] == [False]
    await rec.store.run(lambda conn: None)
    actions = [a for a, _ in door_log(rec.store.path) if a.startswith("grant")]
    assert actions == ["grant", "grant_refused"]
    assert rows(rec.store.path, "SELECT door_outcome FROM events") == [("refused: stopped",)]


async def test_granted_and_opened_is_shown_by_why(rig: tuple[doors.Doors, Receiver]) -> None:
    _, rec = rig
    await grant(rec)
    event_id = rows(rec.store.path, "SELECT id FROM events")[0][0]
    assert explain.lines(rec.store.db.conn, event_id)[-1] == "door: unlocked for this decision"


# ----- item: a mode switch acts on the doors before the command returns ------------------------


@pytest.fixture
def daemon(lock_cfg: Config) -> Iterator[LiveDaemon]:
    live = LiveDaemon(lock_cfg)
    yield live
    live.stop()


def cli_config(tmp_path: Path, cfg: Config, port: int) -> str:
    """A CLI configuration reaching the daemon's admin port and sharing its state directory and
    its doors (a switch names a configured door)."""
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[admin]\nlisten = ["127.0.0.1:{port}"]\ntoken = "test-token"\n'
        f'[storage]\nstate_dir = "{cfg.storage.state_dir}"\n' + DOOR_TOML
    )
    return str(path)


def test_admin_switch_has_reached_the_doors_when_it_answers(
    daemon: LiveDaemon, mock_factory: MockFactory
) -> None:
    auth = {"authorization": "Bearer test-token"}
    url = f"{daemon.admin_url}/api/v1/modes"
    answer = httpx.post(
        url, json={"mode": "free_access", "on": True, "door": "lobby"}, headers=auth
    )
    assert answer.status_code == 200
    assert lock(mock_factory).state is True  # held open by free access, no poll waited for
    answer = httpx.post(url, json={"mode": "lockdown", "on": True}, headers=auth)
    assert answer.status_code == 200
    assert lock(mock_factory).state is False
    assert httpx.get(f"{daemon.admin_url}/api/v1/doors").json()["lockdown"] is True


def test_cli_switch_goes_through_the_running_daemon(
    daemon: LiveDaemon, mock_factory: MockFactory, lock_cfg: Config, tmp_path: Path
) -> None:
    cfg_file = cli_config(tmp_path, lock_cfg, daemon.daemon.admin_port)
    assert cli.main(["mode", "lockdown", "on", "-c", cfg_file]) == 0
    site = daemon.daemon.doors
    assert site is not None and site.lockdown is True
    assert site.doors["lobby"].refusal() == "lockdown"
    assert cli.main(["mode", "lockdown", "on", "--override-group", "nosuch", "-c", cfg_file]) == 65
    assert cli.main(["mode", "lockdown", "off", "-c", cfg_file]) == 0
    assert site.lockdown is False
    by = rows(lock_cfg.storage.database_path, "SELECT by FROM mode_changes ORDER BY id")
    assert len(by) == 2 and all(b[0].startswith("cli:") for b in by)


def test_cli_switch_while_stopped_applies_at_start(
    lock_cfg: Config, mock_factory: MockFactory, tmp_path: Path
) -> None:
    cfg_file = cli_config(tmp_path, lock_cfg, 9)  # nothing listens: the daemon is down
    store.open_database(lock_cfg.storage.database_path).conn.close()
    assert cli.main(["mode", "free-access", "on", "--door", "lobby", "-c", cfg_file]) == 0
    live = LiveDaemon(lock_cfg)
    try:
        assert lock(mock_factory).state is True
        site = live.daemon.doors
        assert site is not None and site.doors["lobby"].holds == {"free-access": "free-access"}
    finally:
        live.stop()
