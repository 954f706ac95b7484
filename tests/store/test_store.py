"""The store on real SQLite files: durability settings, exactly-once, group commit, pruning."""

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
from edged.model import Replay
from edged.receive.normalize import normalize
from edged.store import events as store
from edged.store import migrations, snapshots
from edged.store.events import Record, Store, Stored
from tests.conftest import recognition
from tests.store.helpers import commits_seen, record
from tests.timefix import until

pytestmark = pytest.mark.anyio

JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"x" * 1000).decode()


def test_pragmas_on_every_connection(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    conn.close()


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / "m.db")
    newest = migrations.migrate(conn)
    assert migrations.schema_version(conn) == newest == max(migrations.MIGRATIONS)
    assert migrations.migrate(conn) == newest
    conn.execute(f"PRAGMA user_version = {newest + 1}")
    with pytest.raises(sqlite3.DatabaseError, match="newer than this edged knows"):
        migrations.migrate(conn)
    conn.close()


def test_unopenable_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot open database"):
        store.open_database(tmp_path / "dir.db")


async def test_exactly_once_and_same_answer(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "s.db")
    try:
        first = await st.save(record("u1"))
        again = store.Record(
            normalize(recognition(uuid="u1")), time.time(), None, None, {"different": True}
        )
        second = await st.save(again)
    finally:
        st.close()
    assert not first.duplicate and second.duplicate and second.replayed
    assert second.id == first.id and second.response == first.response
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT COUNT(*), MAX(duplicates) FROM events").fetchone() == (1, 1)


async def test_concurrent_records_share_commits(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "g.db")
    try:
        results = await asyncio.gather(*(st.save(record(f"u{i}")) for i in range(200)))
    finally:
        st.close()
    assert len({r.id for r in results}) == 200
    assert st.stats.records == 200
    assert st.stats.commits < 50, st.stats.commits  # one fsync served many records


async def test_duplicates_within_one_batch(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "d.db")
    try:
        results = await asyncio.gather(*(st.save(record("same")) for _ in range(20)))
    finally:
        st.close()
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.id for r in results}) == 1


async def test_images_bytes_survive_restart(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "r.db", tmp_path / "images")
    await st.save(record("a", image=JPEG))
    st.close()
    again = store.Store(tmp_path / "r.db", tmp_path / "images")
    assert again.stats.images_bytes == 1004
    again.close()


async def test_retention_prunes_old_records_and_their_images(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "p.db", tmp_path / "images")
    try:
        old = time.time() - 400 * 86400
        for i in range(5):
            await st.save(record(f"old{i}", image=JPEG, at=old))
        await st.save(record("new", image=JPEG))
        removed = await st.prune_events(time.time() - 180 * 86400, batch=2)
        assert st.sync_files()
        (row,) = st.db.conn.execute("SELECT image_path, image_offset, image_bytes FROM events")
        assert snapshots.read(tmp_path / "images", *row) == base64.b64decode(JPEG)
    finally:
        st.close()
    assert removed == 5
    assert st.stats.images_bytes == 1004


async def test_failed_commit_is_reported_and_nothing_half_written(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "f.db")
    try:
        await st.save(record("kept"))
        # Another writer holds the database: our commit cannot get its lock in time.
        blocker = sqlite3.connect(tmp_path / "f.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        st._writer_conn.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StoreError, match="cannot store records"):
            await st.save(record("refused"))
        assert not st.healthy()
        blocker.execute("ROLLBACK")
        blocker.close()
        await st.save(record("after"))
        assert st.healthy()
    finally:
        st.close()
    conn = sqlite3.connect(tmp_path / "f.db")
    uuids = [r[0] for r in conn.execute("SELECT uuid FROM events ORDER BY id")]
    assert uuids == ["kept", "after"]


async def test_backpressure_refuses_new_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = store.Store(tmp_path / "b.db")
    monkeypatch.setattr(store, "MAX_PENDING_ITEMS", 0)
    try:
        with pytest.raises(StoreError, match="busy"):
            await st.save(record("x"))
    finally:
        st.close()


async def test_replay_flag_is_stored(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "rp.db")
    rec = record("late")
    rec.replay = Replay.STALE
    try:
        stored = await st.save(rec)
    finally:
        st.close()
    assert stored.replayed
    conn = sqlite3.connect(tmp_path / "rp.db")
    assert conn.execute("SELECT replayed, replay_reason FROM events").fetchone() == (1, "stale")


# ----- group commit and snapshots at commit -----


@pytest.fixture
def st(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "edged.db")
    yield store
    store.close()


def batch_record(uuid: str) -> Record:
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
    saves = [asyncio.ensure_future(st.save(batch_record(f"u-{i}"))) for i in range(10)]
    await until(lambda: st.stats.pending_items == 1 + len(saves))  # all queued behind the job
    commits = st.stats.commits
    release.set()
    await job
    stored = await asyncio.wait_for(asyncio.gather(*saves), 5)
    assert st.stats.commits == commits + 1
    assert len({s.id for s in stored}) == 10
    assert not any(s.duplicate for s in stored)


async def test_a_bad_record_fails_only_its_own_answer_in_a_batch(st: Store) -> None:
    release, job = await hold_writer(st)
    bad = batch_record("u-bad")
    bad.event.dedup_key = None  # type: ignore[assignment]  # violates NOT NULL
    saves = [asyncio.ensure_future(st.save(r)) for r in (batch_record("u-good"), bad)]
    await until(lambda: st.stats.pending_items == 1 + len(saves))  # all queued behind the job
    release.set()
    await job
    good, failed = await asyncio.wait_for(asyncio.gather(*saves, return_exceptions=True), 5)
    assert isinstance(good, Stored) and isinstance(failed, StoreError)
    rows = st.db.conn.execute("SELECT uuid FROM events").fetchall()
    assert [r[0] for r in rows] == ["u-good"]
    assert st.healthy()  # one record's values are not a failing disk


@pytest.mark.parametrize("extra", [b"", b"a", b"ab", b"abc"])
def test_snapshot_size_is_known_without_decoding(extra: bytes) -> None:
    data = b"\xff\xd8\xff\xe0" + bytes(range(200)) + extra
    text = base64.b64encode(data).decode()
    assert store._jpeg_b64_size(text) == len(data)
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert store._jpeg_b64_size(wrapped) == len(data)
    assert store._jpeg_b64_size(base64.b64encode(b"GIF89a" + extra).decode()) is None
    assert store._jpeg_b64_size("!!!!") is None


# ----- kind to an SD card: duplicates from a read, fewer bytes per record, bulk saves -----


def _on_disk(path: Path, sql: str) -> tuple[object, ...]:
    conn = sqlite3.connect(path)
    try:
        return tuple(conn.execute(sql).fetchone())
    finally:
        conn.close()


async def test_duplicate_counts_ride_the_next_commit(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "c.db")
    try:
        first = await st.save(record("u1"))
        seen = time.time() + 5
        found = st.find(first_key := normalize(recognition(uuid="u1")).dedup_key, seen)
        assert found is not None and found.duplicate and found.response == first.response
        assert st.find("nobody:nothing", seen) is None
        assert _on_disk(st.path, "SELECT duplicates FROM events") == (0,)
        await st.save(record("u2"))  # a commit that happens anyway writes the count
        sql = f"SELECT duplicates, last_duplicate_at FROM events WHERE dedup_key = '{first_key}'"
        assert _on_disk(st.path, sql) == (1, seen)
        st.find(first_key, seen + 1)
    finally:
        st.close()  # and so does closing
    assert _on_disk(st.path, sql) == (2, seen + 1)


async def test_new_database_is_small_paged_and_a_record_touches_two_btrees(
    tmp_path: Path,
) -> None:
    st = store.Store(tmp_path / "w.db")
    wal = tmp_path / "w.db-wal"
    try:
        conn = st.db.conn
        assert conn.execute("PRAGMA page_size").fetchone()[0] == migrations.PAGE_SIZE == 2048
        indexes = {r[0] for r in conn.execute("SELECT name FROM pragma_index_list('events')")}
        partial = {r[1] for r in conn.execute("PRAGMA index_list('events')") if r[4]}
        assert indexes - partial == {"sqlite_autoindex_events_1"}  # the unique key alone
        await st.save(record("warm-up"))
        frames = (wal.stat().st_size - 32) // (2048 + 24)
        for i in range(100):
            await st.save(record(f"seq-{i}"))  # one at a time: a commit each
        per_record = ((wal.stat().st_size - 32) // (2048 + 24) - frames) / 100
    finally:
        st.close()
    # the table's last leaf, the key's leaf, now and then a split or the header page
    assert per_record <= 3.5, per_record


async def test_retention_goes_in_arrival_order(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "o.db")
    old = time.time() - 400 * 86400
    try:
        for name, at in (("a", old), ("b", old), ("c", time.time()), ("d", old), ("e", None)):
            await st.save(record(name, at=at))
        assert await st.prune_events(time.time() - 86400) == 2
        uuids = [r[0] for r in st.db.conn.execute("SELECT uuid FROM events ORDER BY id")]
    finally:
        st.close()
    assert uuids == ["c", "d", "e"]  # "d" waits behind a newer record


def _built_in(threads: list[str], uuids: list[str]) -> Iterator[Record]:
    for uuid in uuids:
        threads.append(threading.current_thread().name)
        rec = record(uuid)
        rec.replay = Replay.BACKFILL
        yield rec


async def test_bulk_save_is_built_in_the_writer_and_rides_live_commits(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "bulk.db")
    threads: list[str] = []
    try:
        await st.save(record("old-7"))
        uuids = [f"old-{i}" for i in range(20 * store.BULK_CHUNK)]
        bulk = asyncio.ensure_future(st.save_bulk(_built_in(threads, uuids)))
        await asyncio.sleep(0)  # queued first
        live = await st.save(record("live"))
        assert not bulk.done()  # the live record did not wait for the whole page
        added = await bulk
        rows = st.db.conn.execute("SELECT COUNT(*), SUM(duplicates) FROM events").fetchone()
    finally:
        st.close()
    assert not live.duplicate
    assert added == len(uuids) - 1  # old-7 was stored already: skipped, not counted
    assert tuple(rows) == (len(uuids) + 1, 0)
    assert set(threads) == {"edged-writer"}
    assert st.stats.commits <= 2 + len(uuids) // store.BULK_CHUNK + 1


async def test_a_live_record_goes_ahead_of_the_next_bulk_chunk(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "ahead.db")
    seen = commits_seen(st)
    try:
        uuids = [f"old-{i}" for i in range(20 * store.BULK_CHUNK)]
        bulk = asyncio.ensure_future(st.save_bulk(_built_in([], uuids)))
        await asyncio.sleep(0)  # queued first
        await st.save(record("live"))
        await bulk
    finally:
        st.close()
    (live_commit,) = [c for c in seen if "live" in c]
    assert live_commit == ["live"]  # no back-filled record in the live record's commit
    assert sorted(u for c in seen for u in c if u != "live") == sorted(uuids)


async def test_a_stream_of_live_records_never_stops_a_bulk_save(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "stream.db")
    seen = commits_seen(st)
    try:
        uuids = [f"old-{i}" for i in range(8 * store.BULK_CHUNK)]
        bulk = asyncio.ensure_future(st.save_bulk(_built_in([], uuids)))
        n = 0
        while not bulk.done() and n < 2000:  # live records queued before each commit ends
            await asyncio.gather(*(st.save(record(f"live-{n}-{k}")) for k in range(3)))
            n += 1
        assert bulk.done() and await bulk == len(uuids)
    finally:
        st.close()
    with_chunk = [c for c in seen if any(u.startswith("old-") for u in c)]
    assert len(with_chunk) == len(uuids) // store.BULK_CHUNK  # full chunks, none split
    # at most one live-only commit between two chunks: the bulk kept at least half the commits
    between = 0
    for commit in seen[seen.index(with_chunk[0]) : seen.index(with_chunk[-1])]:
        between = 0 if commit in with_chunk else between + 1
        assert between <= 1


async def test_bulk_save_that_cannot_be_built_fails_cleanly(tmp_path: Path) -> None:
    def broken() -> Iterator[Record]:
        yield record("fine")
        raise ValueError("unreadable")

    st = store.Store(tmp_path / "bb.db")
    try:
        with pytest.raises(StoreError, match="unreadable"):
            await st.save_bulk(broken())
        assert not (await st.save(record("after"))).duplicate
        assert st.stats.pending_bytes < 4096  # the bulk's budget released (a record's may lag)
    finally:
        st.close()
