"""The store's group commit on a real SQLite file: shared commits, all-or-nothing batches."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.errors import StoreError
from edged.normalize import normalize
from edged.store import Record, Store
from tests.conftest import recognition

pytestmark = pytest.mark.anyio


@pytest.fixture
def st(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "edged.db")
    yield store
    store.close()


def record(uuid: str) -> Record:
    return Record(normalize(recognition(uuid=uuid)), time.time(), None, None, {"code": 200})


async def hold_writer(st: Store) -> tuple[threading.Event, asyncio.Future[object]]:
    """Keep the writer busy in a job until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def job(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    pending = asyncio.ensure_future(st.run(job))
    while not started.is_set():
        await asyncio.sleep(0.001)
    return release, pending


async def test_waiting_records_share_one_commit_and_all_get_answers(st: Store) -> None:
    release, job = await hold_writer(st)
    saves = [asyncio.ensure_future(st.save(record(f"u-{i}"))) for i in range(10)]
    await asyncio.sleep(0.01)
    commits = st.stats.commits
    release.set()
    await job
    stored = await asyncio.wait_for(asyncio.gather(*saves), 5)
    assert st.stats.commits == commits + 1
    assert len({s.id for s in stored}) == 10
    assert not any(s.duplicate for s in stored)


async def test_a_failing_batch_fails_every_record_in_it(st: Store) -> None:
    release, job = await hold_writer(st)
    bad = record("u-bad")
    bad.event.dedup_key = None  # type: ignore[assignment]  # violates NOT NULL
    saves = [asyncio.ensure_future(st.save(r)) for r in (record("u-good"), bad)]
    await asyncio.sleep(0.01)
    release.set()
    await job
    outcomes = await asyncio.wait_for(asyncio.gather(*saves, return_exceptions=True), 5)
    assert all(isinstance(o, StoreError) for o in outcomes)
    count = st.db.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert count == 0
