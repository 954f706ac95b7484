"""Snapshots in segment files: placed at commit, written by the writer process, pruned by segment.

Real SQLite files, the real writer process (edged/store/snapwriter.py) on real pipes.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edged.store import events as store
from edged.store import snapshots, snapwriter
from tests.store.helpers import record
from tests.timefix import until

pytestmark = pytest.mark.anyio


def jpeg(n: int, size: int = 1000) -> bytes:
    """A distinct JPEG-framed blob of ``size`` + 6 bytes."""
    body = (f"snapshot {n} ".encode() * (size // 10 + 1))[:size]
    return b"\xff\xd8\xff\xe0" + body + b"\xff\xd9"


def rows(st: store.Store) -> list[sqlite3.Row]:
    return st.db.conn.execute(
        "SELECT id, uuid, image_path, image_offset, image_bytes FROM events ORDER BY id"
    ).fetchall()


def stored_image(st: store.Store, row: sqlite3.Row) -> bytes | None:
    assert st.images_dir is not None
    return snapshots.read(st.images_dir, row["image_path"], row["image_offset"], row["image_bytes"])


async def writer_pid(st: store.Store, uuid: str = "first", image: bytes | None = None) -> int:
    """Store one snapshot (starting the writer process); the process's id."""
    await st.save(record(uuid, image or jpeg(0)))
    assert st.sync_files()
    pid = st._files.pid
    assert pid is not None
    return pid


def segments(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(f"*{snapshots.SUFFIX}"))


async def test_snapshots_go_one_after_another_into_a_segment(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "s.db", tmp_path / "images")
    try:
        images = [jpeg(i, 900 + i) for i in range(5)]
        for i, image in enumerate(images):
            await st.save(record(f"u{i}", image))
        assert st.sync_files()
        saved = rows(st)
        assert [stored_image(st, r) for r in saved] == images
        (name,) = {r["image_path"] for r in saved}
        assert name == "seg-000000001.jpegs"
        offsets = [r["image_offset"] for r in saved]
        assert offsets == [sum(len(x) for x in images[:i]) for i in range(5)]
        segment = (tmp_path / "images" / saved[0]["image_path"]).read_bytes()
        assert segment == b"".join(images)  # each snapshot a whole JPEG at its place
        assert st.stats.images_bytes == len(segment)
    finally:
        st.close()


async def test_a_restart_starts_a_new_segment_and_keeps_the_old(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "s.db", tmp_path / "images")
    await st.save(record("a", jpeg(1)))
    st.close()  # closing hands everything queued to the writer process and waits for it
    again = store.Store(tmp_path / "s.db", tmp_path / "images")
    try:
        await again.save(record("b", jpeg(2)))
        assert again.sync_files()
        first, second = rows(again)
        assert first["image_path"] != second["image_path"]
        assert stored_image(again, first) == jpeg(1) and stored_image(again, second) == jpeg(2)
        assert again.stats.images_bytes == 2 * len(jpeg(1))
    finally:
        again.close()


async def test_close_writes_everything_queued(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "s.db", tmp_path / "images")
    for i in range(40):
        await st.save(record(f"u{i}", jpeg(i, 20_000)))
    st.close()
    reader = store.Store(tmp_path / "s.db", None)
    try:
        root = tmp_path / "images"
        found = [snapshots.read(root, *tuple(r)[2:]) for r in rows(reader)]
    finally:
        reader.close()
    assert found == [jpeg(i, 20_000) for i in range(40)]


async def test_the_quota_deletes_whole_segments_oldest_first(tmp_path: Path) -> None:
    size = len(jpeg(0))
    quota = 16 * 3 * size  # segments of three snapshots
    st = store.Store(tmp_path / "q.db", tmp_path / "images", images_max_bytes=quota)
    try:
        for i in range(60):
            await st.save(record(f"u{i}", jpeg(i)))
        await st.run(lambda conn: None)  # the quota is applied right after a commit
        assert st.sync_files()
        kept = [r for r in rows(st) if r["image_path"]]
        assert st.stats.images_bytes == sum(r["image_bytes"] for r in kept) <= quota
        assert len(kept) >= quota // size - 3  # at most one segment more than needed went
        assert [r["uuid"] for r in kept] == [f"u{i}" for i in range(60 - len(kept), 60)]
        assert st.stats.images_pruned == 60 - len(kept)
        assert all(stored_image(st, r) == jpeg(int(r["uuid"][1:])) for r in kept)
        on_disk = segments(tmp_path / "images")
        assert on_disk == sorted({r["image_path"] for r in kept})  # pruned segments are gone
        assert all((tmp_path / "images" / n).stat().st_size <= 3 * size for n in on_disk)
    finally:
        st.close()


async def test_a_quota_below_one_snapshot_keeps_the_records(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "q.db", tmp_path / "images", images_max_bytes=100)
    try:
        for i in range(3):
            await st.save(record(f"u{i}", jpeg(i)))
        await st.run(lambda conn: None)  # the quota is applied right after a commit
        assert st.sync_files()
        assert [r["image_path"] for r in rows(st)] == [None, None, None]
        assert len(rows(st)) == 3 and st.stats.images_bytes == 0
        assert segments(tmp_path / "images") == []
    finally:
        st.close()


async def test_retention_deletes_a_segment_with_its_last_record(tmp_path: Path) -> None:
    old = time.time() - 400 * 86400
    st = store.Store(tmp_path / "r.db", tmp_path / "images")
    for i in range(3):
        await st.save(record(f"old{i}", jpeg(i), at=old + i))
    st.close()
    st = store.Store(tmp_path / "r.db", tmp_path / "images")  # a new run: a new segment
    try:
        await st.save(record("new", jpeg(9)))
        assert st.sync_files()
        first, *_, last = rows(st)
        assert first["image_path"] != last["image_path"]
        assert await st.prune_events(old + 1.5) == 2  # old0, old1: old2 still uses the segment
        assert st.sync_files()
        assert segments(tmp_path / "images") == [first["image_path"], last["image_path"]]
        assert [stored_image(st, r) for r in rows(st)] == [jpeg(2), jpeg(9)]
        assert await st.prune_events(time.time() - 180 * 86400) == 1
        assert st.sync_files()
        assert segments(tmp_path / "images") == [last["image_path"]]
        assert st.stats.images_bytes == len(jpeg(9))
    finally:
        st.close()


async def test_retention_keeps_the_segment_of_a_newer_record(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "r.db", tmp_path / "images")
    old = time.time() - 400 * 86400
    try:
        await st.save(record("old", jpeg(1), at=old))
        await st.save(record("new", jpeg(2)))
        await st.save(record("newest", None))
        assert st.sync_files()
        assert await st.prune_events(time.time() - 180 * 86400) == 1
        assert st.sync_files()
        remaining = rows(st)
        assert [r["uuid"] for r in remaining] == ["new", "newest"]
        assert stored_image(st, remaining[0]) == jpeg(2)  # same segment as the pruned one
        assert st.stats.images_bytes == len(jpeg(2))
    finally:
        st.close()


async def test_snapshots_from_before_segments_are_read_and_pruned(tmp_path: Path) -> None:
    images = tmp_path / "images"
    st = store.Store(tmp_path / "l.db", images, images_max_bytes=2 * len(jpeg(0)) + 10)
    try:
        legacy = images / "2025" / "01" / "02" / "1.jpg"
        legacy.parent.mkdir(parents=True)
        legacy.write_bytes(jpeg(1))
        await st.save(record("legacy"))
        await st.run(
            lambda conn: conn.execute(
                "UPDATE events SET image_path = ?, image_bytes = ? WHERE uuid = 'legacy'",
                ("2025/01/02/1.jpg", len(jpeg(1))),
            )
        )
        st.stats.images_bytes += len(jpeg(1))
        assert stored_image(st, rows(st)[0]) == jpeg(1)  # offset NULL: the whole file
        await st.save(record("a", jpeg(2)))
        await st.save(record("b", jpeg(3)))  # over the quota: the oldest (the file) goes
        await st.run(lambda conn: None)  # the quota is applied right after a commit
        assert st.sync_files()
        assert not legacy.exists()
        assert [r["image_path"] is not None for r in rows(st)] == [False, True, True]
    finally:
        st.close()


async def test_a_snapshot_that_cannot_be_written_is_forgotten_not_the_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "images"
    blocker.write_text("a file where the images folder should be")
    st = store.Store(tmp_path / "f.db", blocker)
    try:
        stored = await st.save(record("u-img", jpeg(1)))
        assert not stored.duplicate
        assert st.sync_files()
        await st.run(lambda conn: None)  # the writer has applied the follow-up update
        assert [tuple(r)[2:] for r in rows(st)] == [(None, None, None)]
        assert st.stats.images_bytes == 0 and st.stats.images_failed == 1
        assert "cannot write snapshot" in caplog.text
    finally:
        st.close()


async def test_undecodable_snapshot_is_dropped_not_the_record(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "u.db", tmp_path / "images")
    try:
        broken = base64.b64encode(jpeg(1)).decode()[:-8] + "*&^%*&^%"
        await st.save(record("broken", broken))
        assert st.sync_files()
        await st.run(lambda conn: None)
        assert [(r["uuid"], r["image_path"]) for r in rows(st)] == [("broken", None)]
        assert st.stats.images_failed == 1
    finally:
        st.close()


async def test_not_a_jpeg_is_not_kept(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "g.db", tmp_path / "images")
    try:
        await st.save(record("gif", b"GIF89a" + bytes(100)))
        assert st.sync_files()
        assert rows(st)[0]["image_path"] is None and st.stats.images_failed == 0
    finally:
        st.close()


async def test_a_killed_writer_process_is_replaced(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "k.db", tmp_path / "images")
    try:
        first = await writer_pid(st, "before", jpeg(1))
        os.kill(first, signal.SIGKILL)
        await until(lambda: st._files.pid is None)  # it is gone (and reaped)
        for i in range(3):
            await st.save(record(f"after{i}", jpeg(10 + i)))
        assert st.sync_files()
        assert st._files.pid not in (None, first)
        after = rows(st)[1:]
        assert [stored_image(st, r) for r in after] == [jpeg(10), jpeg(11), jpeg(12)]
        assert stored_image(st, rows(st)[0]) == jpeg(1)  # written before the kill: still there
    finally:
        st.close()


async def test_a_stuck_writer_process_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(snapshots, "STUCK_SECONDS", 0.3)
    st = store.Store(tmp_path / "s.db", tmp_path / "images")
    stuck = await writer_pid(st)
    try:
        os.kill(stuck, signal.SIGSTOP)  # takes no more input: the 1 MiB pipe fills up
        big = [jpeg(i, 200_000) for i in range(1, 13)]
        for i, image in enumerate(big):
            await st.save(record(f"big{i}", image))
        assert st.sync_files(30.0)
        assert st._files.pid not in (None, stuck)
        assert "writer process failed" in caplog.text
        found = [stored_image(st, r) for r in rows(st)[1:]]
        assert found[-1] == big[-1]  # what came after the replacement is written
        assert sum(f is not None for f in found) >= len(big) - 6  # at most a pipeful lost
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stuck, signal.SIGKILL)
        st.close()


async def test_the_writer_process_runs_at_the_lowest_priority(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "n.db", tmp_path / "images")
    try:
        pid = await writer_pid(st)
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[16]) == snapwriter.NICE == 19
        assert os.getpriority(os.PRIO_PROCESS, 0) < 19  # the daemon itself is untouched
    finally:
        st.close()


async def test_the_writer_process_survives_a_stop_signal_until_its_input_ends(
    tmp_path: Path,
) -> None:
    st = store.Store(tmp_path / "t.db", tmp_path / "images")
    try:
        pid = await writer_pid(st, "a", jpeg(1))
        os.kill(pid, signal.SIGTERM)  # systemd signals the whole group at stop
        await st.save(record("b", jpeg(2)))
        assert st.sync_files()
        assert st._files.pid == pid
        assert [stored_image(st, r) for r in rows(st)] == [jpeg(1), jpeg(2)]
    finally:
        st.close()


def frame(op: bytes, name: str, offset: int, size: int, text: bytes) -> bytes:
    encoded = name.encode()
    return snapwriter.HEADER.pack(op, offset, size, len(encoded), len(text)) + encoded + text


def test_writer_process_protocol(tmp_path: Path) -> None:
    good, other = jpeg(1), jpeg(2)
    stream = b"".join(
        [
            frame(b"W", "0000000001.jpegs", 0, len(good), base64.b64encode(good)),
            frame(b"W", "0000000001.jpegs", len(good), len(other), base64.b64encode(other)),
            frame(b"W", "0000000001.jpegs", 9999, 10, base64.b64encode(b"\xff\xd8" + bytes(9))),
            frame(b"W", "0000000001.jpegs", 9999, 6, base64.b64encode(b"GIF89a")),
            frame(b"W", "../escape.jpegs", 0, len(good), base64.b64encode(good)),
            frame(b"M", "", 7, 0, b""),
            frame(b"W", "0000000002.jpegs", 0, len(good), base64.b64encode(good)),
            frame(b"D", "0000000002.jpegs", 0, 0, b""),
            frame(b"D", "0000000003.jpegs", 0, 0, b""),  # missing: fine
            frame(b"M", "", 8, 0, b""),
            b"\x00\x01",  # a truncated header: the end
        ]
    )
    out = io.StringIO()
    snapwriter.serve(str(tmp_path), io.BytesIO(stream), out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("fail 9999 10 0000000001.jpegs snapshot decodes to 11 bytes")
    assert lines[1].startswith("fail 9999 6 0000000001.jpegs")
    assert lines[2].startswith("fail 0 1006 ../escape.jpegs bad segment name")
    assert lines[3:] == ["ok 7", "ok 8"]
    assert (tmp_path / "0000000001.jpegs").read_bytes() == good + other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0000000001.jpegs"]


def test_reading_refuses_what_is_not_the_snapshot(tmp_path: Path) -> None:
    (tmp_path / "s.jpegs").write_bytes(jpeg(1) + bytes(100))
    n = len(jpeg(1))
    assert snapshots.read(tmp_path, "s.jpegs", 0, n) == jpeg(1)
    assert snapshots.read(tmp_path, "s.jpegs", n, 100) is None  # not a JPEG there
    assert snapshots.read(tmp_path, "s.jpegs", n + 50, 100) is None  # past the end
    assert snapshots.read(tmp_path, "gone.jpegs", 0, n) is None
    assert snapshots.read(tmp_path, "../s.jpegs", 0, n) is None


def test_placer_numbers_segments_in_order_across_runs(tmp_path: Path) -> None:
    placer = snapshots.Placer(tmp_path, limit=100)
    assert placer.place(60) == ("seg-000000001.jpegs", 0)
    assert placer.place(30) == ("seg-000000001.jpegs", 60)
    placer.unplace(60, 30)  # a duplicate gives its place back
    assert placer.place(30) == ("seg-000000001.jpegs", 60)
    assert placer.place(30) == ("seg-000000002.jpegs", 0)  # full
    placer.retire("seg-000000002.jpegs")
    assert placer.place(10) == ("seg-000000003.jpegs", 0)
    for name in ("seg-000000041.jpegs", "seg-000000007.jpegs", "seg-x.jpegs", "seg-99.txt"):
        (tmp_path / name).write_bytes(b"")
    assert snapshots.Placer(tmp_path, limit=100).place(10) == ("seg-000000042.jpegs", 0)
    assert sorted(["2026/11/28/5.jpg", "seg-000000001.jpegs"])[0] == "2026/11/28/5.jpg"


@pytest.mark.parametrize(("quota", "limit"), [(0, 16 << 20), (1 << 30, 16 << 20), (16_000, 1000)])
def test_segment_size_follows_the_quota(quota: int, limit: int) -> None:
    assert snapshots.segment_bytes(quota) == limit


def test_frames_reach_the_pipe_whole_and_in_order() -> None:
    read_end, write_end = os.pipe()
    buffers = [os.urandom(n) for n in (10, 70_000, 1, 200_000, 0, 3)] * 300  # > IOV_MAX, > pipe
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    os.set_blocking(write_end, False)  # as the writer's pipe: a full pipe is waited for
    try:
        snapshots._write_all(write_end, buffers, timeout=30.0)
    finally:
        os.close(write_end)
    reader.join(30)
    os.close(read_end)
    assert bytes(received) == b"".join(buffers)


def test_a_pipe_that_takes_nothing_is_given_up_on() -> None:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        with pytest.raises(TimeoutError, match="took nothing"):
            snapshots._write_all(write_end, [bytes(4 << 20)], timeout=0.2)  # nobody reads
    finally:
        os.close(write_end)
        os.close(read_end)


async def test_without_a_writer_process_records_are_kept_and_snapshots_counted_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(snapshots.sys, "executable", str(tmp_path / "no-python-here"))
    st = store.Store(tmp_path / "w.db", tmp_path / "images")
    try:
        for i in range(3):
            stored = await st.save(record(f"u{i}", jpeg(i)))
            assert not stored.duplicate
        assert st.sync_files()
        await st.run(lambda conn: None)  # the writer has applied the follow-up updates
        assert [(r["uuid"], r["image_path"]) for r in rows(st)] == [
            ("u0", None),
            ("u1", None),
            ("u2", None),
        ]
        assert st.stats.images_failed == 3 and st.stats.images_bytes == 0
        assert "cannot start the writer process" in caplog.text
    finally:
        st.close()
