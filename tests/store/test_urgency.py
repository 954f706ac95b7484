"""Answers a person waits for go first: pushes and back-fill chunks step aside, boundedly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edged.config import Config
from edged.model import Replay
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from edged.store.events import Record
from edged.store.urgency import Urgency
from tests.conftest import asgi_client, auth_request, recognition
from tests.store.helpers import commits_seen, record

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_behind_returns_at_once_when_nobody_waits_else_after_the_answer() -> None:
    urgency = Urgency(hold=30)
    await urgency.behind()  # nobody marked: no wait at all
    assert urgency.held == 0
    with urgency.marked():
        waiting = asyncio.ensure_future(urgency.behind())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done()  # held while the answer is being given
        with urgency.marked():  # a second one overlapping: still held when the first ends
            pass
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
    await asyncio.wait_for(waiting, 5)  # released by the last answer, long before its hold
    assert urgency.held == 1 and urgency.count == 0


async def test_behind_never_waits_longer_than_its_hold() -> None:
    urgency = Urgency(hold=0)
    with urgency.marked():
        await asyncio.wait_for(urgency.behind(), 5)  # the answer is still being given
    assert urgency.count == 0


async def test_an_error_in_the_answer_still_ends_its_mark() -> None:
    urgency = Urgency(hold=30)
    with pytest.raises(RuntimeError), urgency.marked():
        raise RuntimeError("boom")
    assert urgency.count == 0
    await asyncio.wait_for(urgency.behind(), 1)


def test_hold_bulk_waits_for_the_record_and_at_most_its_hold() -> None:
    clock = FakeClock()
    urgency = Urgency(hold=0.05)
    polls: list[float] = []

    def nothing(timeout: float) -> bool:
        polls.append(timeout)
        clock.now += timeout
        return False

    urgency.hold_bulk(nothing, clock)
    assert polls == []  # nobody marked: the chunk starts at once
    urgency.count = 1
    urgency.hold_bulk(nothing, clock)
    assert 0.05 <= sum(polls) <= 0.052 and max(polls) <= 0.002  # bounded, in short polls

    def third(timeout: float) -> bool:
        polls.append(timeout)
        return len(polls) == 3

    polls.clear()
    urgency.hold_bulk(third, clock)
    assert len(polls) == 3  # the record came: no more waiting

    def answered(timeout: float) -> bool:
        polls.append(timeout)
        urgency.count = 0  # the answer was given some other way (e.g. refused)
        return False

    polls.clear()
    urgency.count = 1
    urgency.hold_bulk(answered, clock)
    assert len(polls) == 1 and urgency.held_bulk == 3


def test_a_worker_thread_sleeps_aside_while_an_answer_is_marked_and_at_most_its_hold() -> None:
    clock = FakeClock()
    urgency = Urgency(hold=0.05)
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        clock.now += seconds

    urgency.aside(clock, nap)
    assert naps == [] and urgency.held_threads == 0  # nobody waits: no sleep at all
    urgency.count = 1
    urgency.aside(clock, nap)
    assert 0.05 <= sum(naps) <= 0.052 and max(naps) <= 0.001  # bounded, in short naps

    def answered(seconds: float) -> None:
        naps.append(seconds)
        urgency.count = 0

    naps.clear()
    urgency.count = 1
    urgency.aside(clock, answered)
    assert len(naps) == 1 and urgency.held_threads == 2  # the answer given: back to work


def test_paced_items_step_aside_every_so_many_and_lose_none() -> None:
    urgency = Urgency(hold=0.0)
    urgency.count = 1  # always marked; a hold of 0 makes each step aside a look only
    assert list(urgency.paced(range(130), every=64)) == list(range(130))
    assert urgency.held_threads == 3  # before items 0, 64 and 128


def test_the_doors_are_busy_for_a_while_after_an_answer_and_background_work_rests() -> None:
    clock = FakeClock()
    urgency = Urgency(clock=clock)
    assert not urgency.recent() and urgency.rest(0.04) == 0.0  # nobody came: full speed
    with urgency.marked():
        pass
    assert urgency.marks == 1 and urgency.recent()
    assert urgency.rest(0.04) == pytest.approx(0.04)  # half the time: as long as it worked
    assert urgency.rest(0.04, duty=0.25) == pytest.approx(0.12)
    clock.now += 10.0
    assert urgency.recent()
    clock.now += 0.01
    assert not urgency.recent() and urgency.rest(0.04) == 0.0  # quiet again: full speed


def _backfilled(uuids: list[str]) -> Iterator[Record]:
    for uuid in uuids:
        rec = record(uuid)
        rec.replay = Replay.BACKFILL
        yield rec


async def test_the_writer_holds_a_bulk_chunk_for_the_marked_answer(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "held.db")
    st.urgency.hold = 30  # the record, not the hold, must end the wait
    seen = commits_seen(st)
    try:
        st.urgency.count = 1  # a remote-auth request is being decided
        uuids = [f"old-{i}" for i in range(4 * store.BULK_CHUNK)]
        bulk = asyncio.ensure_future(st.save_bulk(_backfilled(uuids)))
        await asyncio.sleep(0.05)  # the writer has the bulk save; it must not start a chunk
        assert seen == []
        live = await asyncio.wait_for(st.save(record("live")), 10)
        st.urgency.count = 0
        assert await asyncio.wait_for(bulk, 10) == len(uuids)
    finally:
        st.close()
    assert seen[0] == ["live"]  # the first commit is the live record's, alone
    assert not live.duplicate and st.urgency.held_bulk >= 1
    assert sorted(u for c in seen[1:] for u in c) == sorted(uuids)


async def test_the_writer_goes_on_with_the_bulk_after_the_hold(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "bounded.db")
    st.urgency.hold = 0.01
    try:
        st.urgency.count = 1  # marked for good: an answer that never reaches the store
        uuids = [f"old-{i}" for i in range(3 * store.BULK_CHUNK)]
        assert await asyncio.wait_for(st.save_bulk(_backfilled(uuids)), 10) == len(uuids)
    finally:
        st.close()
    assert st.urgency.held_bulk >= 3  # once before each chunk (and the last, empty, read)


async def test_a_chunk_being_built_when_an_answer_begins_is_cut_short(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "cut.db")
    seen = commits_seen(st)

    def marked_midway() -> Iterator[Record]:
        for n, rec in enumerate(_backfilled([f"old-{i}" for i in range(3 * store.BULK_CHUNK)])):
            if n == 5:
                st.urgency.marks += 1  # a remote-auth request starts while the chunk is built
            yield rec

    try:
        assert await asyncio.wait_for(st.save_bulk(marked_midway()), 10) == 3 * store.BULK_CHUNK
    finally:
        st.close()
    # the chunk ends at the record built when the answer began; the rest in whole chunks
    assert [len(c) for c in seen] == [6, store.BULK_CHUNK, store.BULK_CHUNK, store.BULK_CHUNK - 6]


class Gate:
    """An upstream authority that holds a remote-auth request until it is opened."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def __call__(self, event: object, raw: object, rec: Record) -> Record:
        self.entered.set()
        await self.open.wait()
        return rec


@pytest.fixture
async def gated(cfg: Config) -> AsyncIterator[tuple[Receiver, Gate]]:
    st = store.Store(cfg.storage.database_path)
    gate = Gate()
    yield Receiver(cfg, st, authority=gate), gate
    st.close()


async def test_a_push_waits_while_a_remote_auth_request_is_answered(
    gated: tuple[Receiver, Gate],
) -> None:
    receiver, gate = gated
    receiver.store.urgency.hold = 30
    async with asgi_client(create_app(receiver)) as client:
        auth = asyncio.ensure_future(client.post("/auth", json=auth_request()))
        await asyncio.wait_for(gate.entered.wait(), 5)
        push = asyncio.ensure_future(client.post("/eventRcv", json=recognition(uuid="p-1")))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not push.done() and receiver.stats.answered["recognition"] == 0
        assert receiver.store.urgency.held == 1
        gate.open.set()
        assert (await asyncio.wait_for(auth, 5)).status_code == 200
        assert (await asyncio.wait_for(push, 5)).status_code == 200
    assert receiver.store.urgency.count == 0
    assert receiver.stats.answered["recognition"] == 1


async def test_a_push_is_held_no_longer_than_the_hold(gated: tuple[Receiver, Gate]) -> None:
    receiver, gate = gated
    receiver.store.urgency.hold = 0.01
    async with asgi_client(create_app(receiver)) as client:
        auth = asyncio.ensure_future(client.post("/auth", json=auth_request()))
        await asyncio.wait_for(gate.entered.wait(), 5)
        push = await asyncio.wait_for(client.post("/eventRcv", json=recognition(uuid="p-2")), 5)
        assert push.status_code == 200 and not auth.done()  # stored while the auth still waits
        gate.open.set()
        assert (await asyncio.wait_for(auth, 5)).status_code == 200
    assert receiver.store.urgency.count == 0 and receiver.store.urgency.held == 1
