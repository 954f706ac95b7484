"""Back-fill: the terminal's stored records for a gap, ingested once, as replayed."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edged.config import TerminalConfig
from edged.receive.normalize import normalize
from edged.receive.receiver import ack_body
from edged.sim import api as simapi
from edged.sim.terminal import SimulatedTerminal
from edged.store import events as store
from edged.store.urgency import Urgency
from edged.terminals import client as terminals
from edged.terminals.backfill import backfill
from tests.simfix import Running, managed_config, until

pytestmark = pytest.mark.anyio


def rows(path: Path) -> list[tuple[str, int, str | None, int]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT uuid, replayed, replay_reason, duplicates FROM events ORDER BY uuid"
        ).fetchall()
    finally:
        conn.close()


async def test_backfill_ingests_exactly_the_missing_records(
    sim: SimulatedTerminal, tmp_path: Path
) -> None:
    cfg = managed_config(tmp_path / "state", sim)
    st = store.Store(cfg.storage.database_path)
    made = sim.emit(5)  # not registered: kept in the terminal's history only
    for data in made[:2]:  # edged got these two live
        event = normalize({"type": 0, "data": data})
        await st.save(store.Record(event, time.time(), None, "lobby", ack_body()))
    client = terminals.client_for(cfg, cfg.terminals[0], st.db.conn)
    try:
        added = await backfill(client, st, time.time() - 60, time.time())
        again = await backfill(client, st, time.time() - 60, time.time())
    finally:
        await client.aclose()
        st.close()
    assert (added, again) == (3, 0)
    stored = rows(cfg.storage.database_path)
    assert len(stored) == 5 and all(dup == 0 for *_, dup in stored)
    assert sorted((replayed, reason) for _, replayed, reason, _ in stored) == [
        (0, None),
        (0, None),
        (1, "backfill"),
        (1, "backfill"),
        (1, "backfill"),
    ]


async def test_backfill_reads_every_page(sim: SimulatedTerminal, tmp_path: Path) -> None:
    cfg = managed_config(tmp_path / "state", sim)
    st = store.Store(cfg.storage.database_path)
    sim.emit(450)
    client = terminals.client_for(cfg, cfg.terminals[0], st.db.conn)
    try:
        await client.device_info()  # as a reconcile does first: the firmware sets the page size
        added = await backfill(client, st, time.time() - 60, time.time())
    finally:
        await client.aclose()
        st.close()
    assert added == 450
    limit = sim.firmware.records_limit  # 25 on 1.0, 200 on 1.3.0, less elsewhere
    first = terminals.records_page(terminals.firmware_version({"sw_ver": sim.firmware.version}))
    refused = 1 if first > limit else 0  # one page refused, then pages within the named limit
    assert sim.requests["POST /v1/event/records"] == -(-450 // limit) + refused
    assert len(rows(cfg.storage.database_path)) == 450


async def test_reconciler_backfills_the_gap_while_edged_was_away(
    sim: SimulatedTerminal, tmp_path: Path
) -> None:
    cfg = managed_config(tmp_path / "state", sim)
    run = Running(cfg)
    await until(lambda: run.rec.health.state == "registered")
    await run.stop()
    sim.state.subscription = None  # lost while edged was stopped: these are never pushed
    sim.emit(3)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.backfilled == 3)
        assert sim.registered
    finally:
        await run.stop()
    assert [r[2] for r in rows(cfg.storage.database_path)] == ["backfill"] * 3


@pytest.fixture
def no_gc() -> Iterator[None]:
    """The collector's pauses are the same wherever a page is parsed: not what is measured."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_records_page_is_parsed_off_the_event_loop(no_gc: None) -> None:
    """A huge page holds the loop for a fraction of what parsing it there would (bounded).

    Parsed in a thread without handing the GIL back, it would hold the loop all along too, in
    every try; a loaded machine may stall the loop's thread once, so the best of three counts.
    """
    serial = "PS71HD01MC22C00077"
    item = {**simapi.new_record(serial, 1, int(time.time()), "e-1", "Ann", "", 3), "rgb_image": ""}
    page = {"code": 200, "msg": "ok", "data": {"total": 30_000, "items": [item] * 30_000}}
    content = json.dumps(page).encode()
    terminal = TerminalConfig(name="lobby", serial=serial, host="127.0.0.1", scheme="http")
    tries = []
    for _ in range(3):
        t0 = time.perf_counter()
        json.loads(content)
        on_loop = time.perf_counter() - t0  # what the loop would be held for, parsed on it
        client = terminals.TerminalClient(terminal, "pw", None)
        client.http = httpx.AsyncClient(
            base_url=terminals.base_url(terminal),
            transport=httpx.MockTransport(lambda request: httpx.Response(200, content=content)),
        )
        client.basic = True
        lags: list[float] = []

        async def probe(lags: list[float] = lags) -> None:
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0)
                now = time.perf_counter()
                lags.append(now - last)
                last = now

        ticking = asyncio.create_task(probe())
        try:
            got = await client.records(0, time.time(), 0)
        finally:
            ticking.cancel()
            await client.aclose()
        assert len(got["items"]) == 30_000 and got["items"][-1] == item
        assert len(lags) > 10
        tries.append((max(lags), on_loop))
        if max(lags) < on_loop / 3:
            break
    assert any(held < on_loop / 3 for held, on_loop in tries), tries


class PagedTerminal:
    """A terminal's records API in memory: ``total`` records, pages of ``limit``."""

    def __init__(self, total: int, limit: int) -> None:
        self.terminal = TerminalConfig(name="lobby", serial="PS71HD01MC22C00077")
        self.total, self.limit = total, limit
        self.asked: dict[int, asyncio.Event] = {}

    async def records(self, begin: float, end: float, offset: int) -> dict[str, Any]:
        self.asked.setdefault(offset, asyncio.Event()).set()
        now = int(time.time())
        items = [
            simapi.new_record(self.terminal.serial, n + 1, now, "e-1", "Ann", "", 3)
            for n in range(offset, min(offset + self.limit, self.total))
        ]
        return {"total": self.total, "items": items}


class WaitingStore:
    """Stores a page only once the next one was asked for (or gives up after a deadline)."""

    def __init__(self, terminal: PagedTerminal) -> None:
        self.terminal = terminal
        self.saved: list[int] = []
        self.urgency = Urgency()

    async def save_bulk(self, records: Iterator[store.Record]) -> int:
        batch = list(records)
        offset = sum(self.saved) + len(batch)
        if offset < self.terminal.total:
            asked = self.terminal.asked.setdefault(offset, asyncio.Event())
            await asyncio.wait_for(asked.wait(), 10)
        self.saved.append(len(batch))
        return len(batch)


async def test_the_next_page_is_read_while_one_is_stored() -> None:
    terminal = PagedTerminal(total=450, limit=200)
    saver = WaitingStore(terminal)
    added = await backfill(terminal, saver, 0, time.time())  # type: ignore[arg-type]
    assert (added, saver.saved, sorted(terminal.asked)) == (450, [200, 200, 50], [0, 200, 400])


async def test_a_page_is_parsed_aside_while_a_remote_auth_answer_is_being_given() -> None:
    serial = "PS71HD01MC22C00077"
    items = [simapi.new_record(serial, n, int(time.time()), "e-1", "Ann", "", 3) for n in range(5)]
    content = json.dumps({"code": 200, "msg": "ok", "data": {"total": 5, "items": items}}).encode()
    terminal = TerminalConfig(name="lobby", serial=serial, host="127.0.0.1", scheme="http")
    urgency = Urgency(hold=0.0)  # a hold of 0: each step aside is a look at the count only
    client = terminals.TerminalClient(terminal, "pw", None, urgency=urgency)
    client.http = httpx.AsyncClient(
        base_url=terminals.base_url(terminal),
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=content)),
    )
    client.basic = True
    try:
        assert len((await client.records(0, time.time(), 0))["items"]) == 5
        assert urgency.held_threads == 0  # nobody waits: the parser never stepped aside
        urgency.count = 1  # a remote-auth request is being answered
        got = await client.records(0, time.time(), 0)
    finally:
        await client.aclose()
    assert got["items"] == items
    assert urgency.held_threads >= len(items)  # between every record's object


class Ticking:
    """A fake clock that a store's save moves on; the rests it is asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.rests: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.rests.append(seconds)
        self.now += seconds


class TimedStore:
    """Stores a page in 40 ms of a fake clock."""

    def __init__(self, clock: Ticking, urgency: Urgency) -> None:
        self.clock, self.urgency, self.saved = clock, urgency, 0

    async def save_bulk(self, records: Iterator[store.Record]) -> int:
        batch = list(records)
        self.clock.now += 0.04
        self.saved += len(batch)
        return len(batch)


async def rests_of(clock: Ticking, urgency: Urgency, cpu: Callable[[], float]) -> list[float]:
    """Back-fill 450 records (three pages) into a :class:`TimedStore`; the rests asked for."""
    added = await backfill(
        PagedTerminal(total=450, limit=200),  # type: ignore[arg-type]
        TimedStore(clock, urgency),  # type: ignore[arg-type]
        0,
        time.time(),
        cpu=cpu,
        sleep=clock.sleep,
    )
    assert added == 450
    return clock.rests


async def test_while_the_doors_are_busy_the_back_fill_rests_after_each_page() -> None:
    clock = Ticking()
    busy = Urgency(clock=clock)
    with busy.marked():  # a remote-auth request came a moment ago
        pass
    # as long as each page took, and not after the last
    assert await rests_of(clock, busy, cpu=clock) == pytest.approx([0.04, 0.04])

    quiet, idle = Ticking(), Urgency()  # nobody at the doors: full speed
    assert await rests_of(quiet, idle, cpu=quiet) == []


async def test_a_page_that_waited_for_the_disk_costs_no_rest() -> None:
    clock = Ticking()  # the wall clock: each page's save takes 40 ms of it
    busy = Urgency(clock=clock)
    with busy.marked():  # the doors are busy
        pass
    # ... waiting for fsync: no CPU spent meanwhile
    assert await rests_of(clock, busy, cpu=lambda: 1.0) == []
