"""The people sync against the simulator over real HTTPS, on every firmware."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edged import config
from edged.access import people, terminalstate
from edged.access.faces import FaceStore
from edged.config.schema import PeopleSyncConfig, TerminalClockConfig
from edged.sim.library import NO_FACE
from edged.sim.terminal import SimulatedTerminal
from edged.store import events as store
from edged.terminals.peoplesync import PeopleSync
from tests.conftest import face_jpeg
from tests.simfix import managed_config

pytestmark = pytest.mark.anyio
UTC = ZoneInfo("UTC")


def configured(tmp_path: Path, sim: SimulatedTerminal) -> config.Config:
    cfg = managed_config(tmp_path / "state", sim)
    clock = TerminalClockConfig(mode="manual")  # the terminals' zone kept: rules as scheduled
    return dataclasses.replace(
        cfg, people_sync=PeopleSyncConfig(enabled=True, batch_size=3), terminal_clock=clock
    )


def person(pid: str, uid: str, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "name": pid.upper(), "user_id": uid, "groups": ["staff"], **extra}


def photo(seed: int, marker: bytes = b"") -> str:
    return base64.b64encode(face_jpeg(seed)[:-2] + marker + b"\xff\xd9").decode()


def apply(cfg: config.Config, doc: dict[str, Any], replace: bool = True) -> None:
    conn = store.open_connection(cfg.storage.database_path)
    try:
        parsed = people.parse_document(doc, UTC)
        people.apply_document(conn, parsed, replace, faces=FaceStore(cfg.storage.faces_path))
    finally:
        conn.close()


def site_doc(extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "people": [
            person("e-1", "101", face_base64=photo(1)),
            person("e-2", "102"),
            person("e-3", "103", blocked=True),
            *(extra or []),
        ],
        "schedules": [
            {"id": "office", "periods": [{"days": ["mon"], "start": "08:00", "end": "18:00"}]}
        ],
        "permissions": [{"group": "staff", "door": "lobby", "schedule": "office"}],
    }


def recorded_items(cfg: config.Config, serial: str) -> dict[tuple[str, str], terminalstate.Item]:
    """What the state database records of the terminal's items."""
    conn = sqlite3.connect(cfg.storage.database_path)
    try:
        return terminalstate.items(conn, serial)
    finally:
        conn.close()


@pytest.fixture
async def rig(tmp_path: Path, sim: SimulatedTerminal) -> Any:
    cfg = configured(tmp_path, sim)
    db = store.Store(cfg.storage.database_path)
    sync = PeopleSync(cfg, cfg.terminals[0], db)
    yield cfg, sync
    if sync.client is not None:
        await sync.client.aclose()
    db.close()


async def test_first_sync_then_nothing_then_only_the_change(
    rig: Any, sim: SimulatedTerminal
) -> None:
    cfg, sync = rig
    apply(cfg, site_doc())
    planned = await sync.sync_once(dry_run=True)
    assert [c.text() for c in planned.changes if c.kind == "user"] == [
        "+ user 101 (person e-1)",
        "+ user 102 (person e-2)",
    ]
    assert not sim.library.users  # a dry run writes nothing
    report = await sync.sync_once()
    assert report.in_step and report.written == 4  # a rule, a group, two users
    assert sorted(sim.library.users) == ["101", "102"]  # the blocked one is not there
    ann = sim.library.users["101"]
    assert base64.b64decode(ann["avatar"]) == base64.b64decode(photo(1))
    group = sim.library.groups[ann["groups"][0]]
    assert sim.library.rules[group["rule_id"]]["schedule"]["mon_period"]
    writes = sim.library.writes
    again = await sync.sync_once()
    assert again.written == 0 and again.changes == [] and sim.library.writes == writes
    apply(cfg, {"people": [person("e-2", "102", name="Bob Renamed")]}, replace=False)
    third = await sync.sync_once()
    assert [c.text() for c in third.changes] == ["~ user 102 (person e-2)"]
    assert sim.library.users["102"]["name"] == "Bob Renamed"
    assert sim.library.writes == writes + 1
    apply(cfg, {"people": [person("e-1", "101", face_base64=photo(1))]})  # e-2 removed
    fourth = await sync.sync_once()
    assert [c.text() for c in fourth.changes] == ["- user 102"]
    assert sorted(sim.library.users) == ["101"]


async def test_a_wiped_terminal_is_filled_again(rig: Any, sim: SimulatedTerminal) -> None:
    cfg, sync = rig
    apply(cfg, site_doc())
    await sync.sync_once()
    sim.library.clear()  # a factory reset
    report = await sync.sync_once()
    assert report.written == 4 and sorted(sim.library.users) == ["101", "102"]


async def test_a_refused_photo_is_recorded_for_its_person_and_blocks_nobody(
    rig: Any, sim: SimulatedTerminal
) -> None:
    cfg, sync = rig
    extra = [person("e-4", "104", face_base64=photo(4, NO_FACE)), person("e-5", "105")]
    apply(cfg, site_doc(extra))
    report = await sync.sync_once()
    assert report.errors == {"104": "80202: no face found in the photo"}
    assert sorted(sim.library.users) == ["101", "102", "105"]
    conn = sqlite3.connect(cfg.storage.database_path)
    try:
        states = terminalstate.of_person(conn, "e-4")
        summary = terminalstate.summary(conn, sim.settings.serial)
    finally:
        conn.close()
    assert states[0]["state"] == "error" and "no face" in states[0]["error"]
    assert summary is not None and summary["errors"] == 1 and summary["in_step"] == 3
    assert summary["people_errors"][0]["person_id"] == "e-4"
    again = await sync.sync_once()  # not retried while the photo is the same
    assert again.changes == [] and again.errors == {"104": "80202: no face found in the photo"}
    retried = await sync.sync_once(retry_errors=True)
    assert [c.text() for c in retried.changes] == ["+ user 104 (person e-4)"]
    extra[0]["face_base64"] = photo(5)
    apply(cfg, site_doc(extra))
    fixed = await sync.sync_once()
    assert fixed.errors == {} and "104" in sim.library.users


async def test_a_type_change_is_a_delete_and_re_create(rig: Any, sim: SimulatedTerminal) -> None:
    cfg, sync = rig
    apply(cfg, site_doc())
    await sync.sync_once()
    doc = site_doc()
    doc["people"][1]["type"] = "visitor"
    apply(cfg, doc)
    report = await sync.sync_once()
    assert report.errors == {}
    assert sim.library.users["102"]["type"] == 2
    group = sim.library.groups[sim.library.users["102"]["groups"][0]]
    assert group["type"] == 2
    # removed and written again within one flush: the last word counts
    assert recorded_items(cfg, sim.settings.serial)[("user", "102")].state == "in_step"
    again = await sync.sync_once()
    assert again.changes == []  # recorded as written: nothing to do again


async def test_a_change_committed_elsewhere_reaches_the_terminal_within_a_poll(
    tmp_path: Path, sim: SimulatedTerminal
) -> None:
    import asyncio

    from tests.timefix import FakeClock, until

    cfg = configured(tmp_path, sim)
    clock = FakeClock()
    db = store.Store(cfg.storage.database_path)
    sync = PeopleSync(cfg, cfg.terminals[0], db, clock=clock)
    apply(cfg, site_doc())
    task = asyncio.create_task(sync.run())
    try:
        await until(lambda: "102" in sim.library.users, 10)
        await until(lambda: clock.pending > 0)  # waiting for a change, the interval, or a wake
        started = clock.monotonic()
        apply(cfg, {"people": [person("e-2", "102", name="Bob Again")]}, replace=False)
        clock.advance(cfg.people_sync.poll_interval)  # one look at the change counter
        await until(lambda: sim.library.users["102"]["name"] == "Bob Again", 10)
        assert clock.monotonic() - started <= 5
        await until(lambda: clock.pending > 0)
        sim.library.clear()  # a factory reset, then the reconciler's hook after it came back
        sync.trigger()
        await until(lambda: sorted(sim.library.users) == ["101", "102"], 10)
        assert sync.report()["in_step"] == 2 and sync.report()["errors"] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        db.close()


async def test_a_refusal_is_forgotten_with_its_person(rig: Any, sim: SimulatedTerminal) -> None:
    cfg, sync = rig
    apply(cfg, site_doc([person("e-4", "104", face_base64=photo(4, NO_FACE))]))
    await sync.sync_once()
    apply(cfg, site_doc())
    await sync.sync_once()
    conn = sqlite3.connect(cfg.storage.database_path)
    try:
        assert terminalstate.of_person(conn, "e-4") == []
        assert [s["user_id"] for s in terminalstate.of_person(conn, "e-1")] == ["101"]
    finally:
        conn.close()


async def test_written_changes_let_go_of_their_bodies_and_update_times_are_recorded(
    rig: Any, sim: SimulatedTerminal
) -> None:
    cfg, sync = rig
    apply(cfg, site_doc())
    planned = await sync.sync_once(dry_run=True)
    assert all(c.body is not None for c in planned.changes)  # a dry run shows what it would send
    report = await sync.sync_once()
    assert report.written == 4 and all(c.body is None for c in report.changes)
    recorded = recorded_items(cfg, sim.settings.serial)
    times = {key: item.update_at for (kind, key), item in recorded.items() if kind == "user"}
    if sync.client is not None and sync.client.version >= (1, 2, 1):  # datasync: update times
        assert times == {k: u["update_at"] for k, u in sim.library.users.items()}
    else:
        assert set(times) == set(sim.library.users) and set(times.values()) == {None}


def test_update_times_are_noted_only_where_recorded_and_changed(tmp_path: Path) -> None:
    conn = store.open_connection(tmp_path / "edged.db")
    try:
        rows = [terminalstate.Item("user", k, f"p-{k}", "d", 5, "in_step") for k in ("1", "2")]
        terminalstate.record(conn, "T1", rows, [], now=10.0)
        times = [("user", "1", 5), ("user", "2", 7), ("user", "3", 9), ("group", "1", 8)]
        terminalstate.note_update_times(conn, "T1", times, now=20.0)
        got = conn.execute(
            "SELECT kind, item_id, update_at, at FROM terminal_people ORDER BY kind, item_id"
        ).fetchall()
    finally:
        conn.close()
    assert [tuple(r) for r in got] == [("user", "1", 5, 10.0), ("user", "2", 7, 20.0)]


class _HangingClient:
    """A client whose terminal is unreachable and whose close never ends."""

    version = None

    async def device_info(self) -> dict[str, Any]:
        from edged.errors import TerminalError

        raise TerminalError("unreachable")

    async def aclose(self) -> None:
        await asyncio.Event().wait()


async def test_the_task_ends_though_the_client_never_closes(
    tmp_path: Path, sim: SimulatedTerminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edged.terminals import peoplesync

    monkeypatch.setattr(peoplesync, "CLOSE_TIMEOUT", 0.1)
    cfg = configured(tmp_path, sim)
    db = store.Store(cfg.storage.database_path)
    try:
        sync = PeopleSync(cfg, cfg.terminals[0], db, client=_HangingClient())  # type: ignore[arg-type]
        task = asyncio.create_task(sync.run())
        await asyncio.sleep(0.05)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        if not done:
            task.cancel()
        assert done
    finally:
        db.close()


def _crowd(n: int) -> dict[str, Any]:
    """A site of ``n`` staff without photos (a large sync that costs little to simulate)."""
    doc = site_doc()
    doc["people"] = [person(f"e-{i}", str(1000 + i)) for i in range(n)]
    return doc


@pytest.mark.parametrize("sim", ["1.3.0"], indirect=True)
async def test_a_large_sync_keeps_its_bookkeeping_in_a_few_transactions(
    tmp_path: Path, sim: SimulatedTerminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = dataclasses.replace(
        configured(tmp_path, sim),
        people_sync=PeopleSyncConfig(enabled=True, batch_size=50),
    )
    commits: list[int] = []
    real = terminalstate.record

    def counted(conn: Any, serial: str, written: Any, removed: Any, *args: Any) -> None:
        written, removed = list(written), list(removed)
        commits.append(len(written) + len(removed))
        real(conn, serial, written, removed, *args)

    monkeypatch.setattr(terminalstate, "record", counted)
    apply(cfg, _crowd(1200))
    db = store.Store(cfg.storage.database_path)
    sync = PeopleSync(cfg, cfg.terminals[0], db)
    try:
        report = await sync.sync_once()
        assert report.written == 1202 and len(sim.library.users) == 1200  # a rule, a group
        assert len(commits) <= 3 and sum(commits) == 1202  # not one commit a batch (25)
        apply(cfg, _crowd(600))  # 600 deletes, in batches of 250
        commits.clear()
        report = await sync.sync_once()
        assert len(sim.library.users) == 600 and len(commits) <= 2 and sum(commits) == 600
    finally:
        if sync.client is not None:
            await sync.client.aclose()
        db.close()
    recorded = recorded_items(cfg, sim.settings.serial)
    assert sorted(k for (kind, k) in recorded if kind == "user") == sorted(sim.library.users)


@pytest.mark.parametrize("sim", ["1.0", "1.3.0"], indirect=True)
async def test_what_was_written_is_recorded_when_a_later_batch_fails(
    rig: Any, sim: SimulatedTerminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edged.errors import TerminalError

    cfg, sync = rig
    apply(cfg, site_doc([person(f"e-{i}", str(200 + i)) for i in range(4, 9)]))
    sent = PeopleSync._send_puts

    async def failing(self: PeopleSync, *args: Any) -> Any:
        _client, _v2, kind, group, _desired = args
        if kind == "user" and any(c.item_id >= "206" for c in group):
            raise TerminalError("the terminal went away")
        return await sent(self, *args)

    monkeypatch.setattr(PeopleSync, "_send_puts", failing)
    with pytest.raises(TerminalError):
        await sync.sync_once()
    recorded = recorded_items(cfg, sim.settings.serial)
    users = sorted(k for (kind, k) in recorded if kind == "user")
    assert users == ["101", "102", "204"] == sorted(sim.library.users)  # each one written


class _Resting:
    """The system's clock whose sleeps are noted and return at once."""

    def __init__(self) -> None:
        from edged.clock import SYSTEM

        self.system = SYSTEM
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.system.monotonic()

    def time(self) -> float:
        return self.system.time()

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        return await self.system.wait(event, timeout)

    def call_later(self, loop: Any, delay: float, callback: Any) -> Any:
        return self.system.call_later(loop, delay, callback)


@pytest.mark.parametrize("sim", ["1.1", "1.3.0"], indirect=True)
async def test_the_sync_rests_after_each_batch_only_while_the_doors_are_busy(
    tmp_path: Path, sim: SimulatedTerminal
) -> None:
    from edged.terminals import peoplesync

    cfg = configured(tmp_path, sim)
    apply(cfg, site_doc([person(f"e-{i}", str(200 + i)) for i in range(4, 9)]))
    clock = _Resting()
    db = store.Store(cfg.storage.database_path)
    sync = PeopleSync(cfg, cfg.terminals[0], db, clock=clock)  # type: ignore[arg-type]
    spent = iter(range(0, 10_000, 3))  # each batch costs 0.3 s of CPU (fake)
    sync.cpu = lambda: next(spent) / 10
    try:
        await sync.sync_once()  # nobody at the doors: full speed
        assert clock.slept == [] and len(sim.library.users) == 7
        apply(cfg, site_doc())  # five deletes, then seven more writes
        apply(cfg, site_doc([person(f"e-{i}", str(300 + i)) for i in range(4, 9)]))
        with db.urgency.marked():
            pass  # a remote-auth answer was given just now: the doors are busy
        report = await sync.sync_once()
        batches = len(report.changes)  # ... batches of at most 3 writes, 15 deletes
        assert clock.slept and len(clock.slept) < batches
        assert all(abs(s - 0.3) < 1e-9 for s in clock.slept)  # DUTY 0.5: as long as it cost
        sync.cpu = lambda: next(spent) * 10.0  # a batch of 30 s of CPU: the rest is capped
        clock.slept.clear()
        apply(cfg, site_doc())
        await sync.sync_once()
        assert clock.slept and max(clock.slept) == peoplesync.MAX_REST
    finally:
        if sync.client is not None:
            await sync.client.aclose()
        db.close()


@pytest.mark.parametrize("sim", ["1.0", "1.3.0"], indirect=True)
async def test_the_sync_steps_aside_while_an_answer_is_being_given(
    rig: Any, sim: SimulatedTerminal
) -> None:
    cfg, sync = rig
    apply(cfg, _crowd(150))
    urgency = sync.store.urgency
    urgency.hold = 0.001
    sync.cpu = lambda: 0.0  # no rests: this test is about the steps aside
    with urgency.marked():  # somebody at the door throughout the sync
        report = await sync.sync_once()
    assert report.written == 152 and len(sim.library.users) == 150
    assert urgency.held >= 3  # before each batch, on the event loop
    assert urgency.held_threads >= 6  # the library, the plan, each batch's encoding
