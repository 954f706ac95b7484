"""The store's group commit on a real SQLite file: shared commits, all-or-nothing batches."""

from __future__ import annotations

import asyncio
import base64
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


JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9").decode()


def with_image(uuid: str) -> Record:
    body = recognition(uuid=uuid, rgb_image=JPEG)
    return Record(normalize(body), time.time(), None, None, {"code": 200})


@pytest.fixture
def st_images(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "edged.db", tmp_path / "images")
    yield store
    store.close()


def snapshots(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


async def test_snapshot_is_on_disk_and_recorded_at_commit(st_images: Store) -> None:
    stored = await st_images.save(with_image("u-1"))
    row = st_images.db.conn.execute(
        "SELECT image_path, image_bytes FROM events WHERE id = ?", (stored.id,)
    ).fetchone()
    assert st_images.images_dir is not None
    image = st_images.images_dir / row["image_path"]
    assert snapshots(st_images.images_dir) == [image]
    assert image.read_bytes() == base64.b64decode(JPEG)
    assert row["image_bytes"] == image.stat().st_size == st_images.stats.images_bytes


async def test_duplicates_leave_only_the_first_copys_snapshot(st_images: Store) -> None:
    copies = await asyncio.gather(*(st_images.save(with_image("u-1")) for _ in range(5)))
    assert sum(not c.duplicate for c in copies) == 1
    assert st_images.images_dir is not None
    path = st_images.db.conn.execute("SELECT image_path FROM events").fetchone()[0]
    assert snapshots(st_images.images_dir) == [st_images.images_dir / path]


async def test_a_failing_snapshot_write_fails_its_batch_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "images"
    blocker.write_text("a file where the images folder should be")
    store = Store(tmp_path / "edged.db", blocker)
    try:
        release, job = await hold_writer(store)
        saves = [
            asyncio.ensure_future(store.save(r)) for r in (record("u-plain"), with_image("u-img"))
        ]
        await asyncio.sleep(0.05)
        release.set()
        await job
        outcomes = await asyncio.wait_for(asyncio.gather(*saves, return_exceptions=True), 5)
        assert all(isinstance(o, StoreError) for o in outcomes)
        assert store.db.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
        assert store.stats.images_bytes == 0
    finally:
        store.close()
