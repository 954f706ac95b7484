"""WAL checkpoints run beside the writer thread, never inside a record's commit."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from edged.store import checkpoint
from edged.store import events as store
from edged.store.checkpoint import Checkpointer, commits_per_checkpoint
from tests.store.helpers import record

pytestmark = pytest.mark.anyio


def log_frames(path: Path) -> int:
    """Pages in the database's WAL now (a checkpoint of its own tells: it copies them too)."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        conn.close()


def events_in_main_file(path: Path, tmp: Path) -> int:
    """Records in the database file alone, as if the WAL were lost: what checkpoints copied."""
    copy = tmp / "main-only.db"
    shutil.copyfile(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # no such table: not even the schema was copied yet
        return 0
    finally:
        conn.close()


async def test_a_commit_never_checkpoints(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "edged.db")
    try:
        st.checkpointer.close()  # no checkpoints at all: only the writer's commits remain
        assert st._writer_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for n in range(400):
            await st.save(record(f"c-{n}"))
        # SQLite's own rule would have checkpointed (and restarted the log) at 1000 pages
        assert log_frames(st.path) > 1000
    finally:
        st.close()


async def test_the_checkpointer_copies_the_log_into_the_database_file(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "edged.db")
    try:
        done = threading.Event()
        real = st.checkpointer.checkpoint

        def observed() -> None:
            real()
            done.set()

        st.checkpointer.checkpoint = observed  # type: ignore[method-assign]
        assert checkpoint.FIRST_COMMITS < 300
        assert events_in_main_file(st.path, tmp_path) == 0
        for n in range(300):  # past the first threshold (checkpoint.FIRST_COMMITS)
            await st.save(record(f"k-{n}"))
        assert done.wait(10), "no checkpoint after 300 commits"
        st.checkpointer.close()  # and a last one of the rest
        stats = st.checkpointer.stats
        assert stats.checkpoints >= 2 and stats.frames > 1000 and stats.failures == 0
        assert events_in_main_file(st.path, tmp_path) == 300
    finally:
        st.close()


def test_commits_per_checkpoint_aims_at_a_thousand_pages() -> None:
    assert commits_per_checkpoint(100, 5000) == 20  # 50 pages a commit
    assert commits_per_checkpoint(100, 250) == 400  # 2.5 pages a commit
    assert commits_per_checkpoint(10, 100_000) == 1  # huge commits: after every one
    assert commits_per_checkpoint(1000, 10) == checkpoint.MAX_COMMITS
    assert commits_per_checkpoint(0, 0) == checkpoint.MAX_COMMITS


class FailingConnection:
    """Fails the first ``failures`` checkpoints (a full disk), then answers like SQLite."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.closed = False

    def execute(self, sql: str) -> Any:
        assert sql == "PRAGMA wal_checkpoint(PASSIVE)"
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return self

    def fetchone(self) -> tuple[int, int, int]:
        return (0, 40, 40)

    def close(self) -> None:
        self.closed = True


def test_a_failing_checkpoint_is_logged_once_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = FailingConnection(failures=3)
    cp = Checkpointer(conn, quiet=3600)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.INFO, logger="edged.store.checkpoint"):
            for _ in range(3):
                cp.committed()
                cp.checkpoint()
            assert cp.stats.failures == 3 and cp.stats.checkpoints == 0
            cp.committed()
            cp.checkpoint()
        assert cp.stats.checkpoints == 1 and cp.stats.frames == 40
        messages = [r.getMessage() for r in caplog.records]
        assert sum("checkpoint failed" in m for m in messages) == 1
        assert sum("work again" in m for m in messages) == 1
    finally:
        cp.close()
    assert conn.closed


def test_the_thread_checkpoints_what_was_committed_when_it_stops(tmp_path: Path) -> None:
    calls: list[str] = []

    class Conn(FailingConnection):
        def execute(self, sql: str) -> Any:
            calls.append(sql)
            return super().execute(sql)

    cp = Checkpointer(Conn(failures=0), quiet=3600)  # type: ignore[arg-type]
    cp.committed()  # below the threshold: no checkpoint yet
    assert calls == []
    cp.close()
    assert calls == ["PRAGMA wal_checkpoint(PASSIVE)"]


async def test_a_log_grown_too_long_is_started_again_by_the_writer(tmp_path: Path) -> None:
    """Beside a writer that never pauses, the thread's checkpoints end a few commits behind and
    the log would not start again; the writer's own checkpoint, before its next commit, lets it."""
    st = store.Store(tmp_path / "edged.db")
    try:
        st.checkpointer.close()  # the thread's part left out: the log only grows
        for n in range(400):
            await st.save(record(f"g-{n}"))
        assert log_frames(st.path) > 1000
        st.checkpointer.restart_due = True  # what the thread says of a log this long
        await st.save(record("after"))
        assert st.checkpointer.stats.finishes == 1 and not st.checkpointer.restart_due
        assert log_frames(st.path) < 20  # that commit began the log again
    finally:
        st.close()


def test_the_thread_asks_for_a_restart_when_the_log_keeps_growing() -> None:
    class Growing(FailingConnection):
        def __init__(self) -> None:
            super().__init__(failures=0)
            self.log = 0

        def fetchone(self) -> tuple[int, int, int]:
            self.log += 1500  # never started again: each checkpoint finds more
            return (0, self.log, self.log)

    cp = Checkpointer(Growing(), quiet=3600)  # type: ignore[arg-type]
    try:
        for _ in range(2):
            cp.committed()
            cp.checkpoint()
            assert not cp.restart_due  # 1,500 and 3,000 pages: not yet
        assert cp._every == commits_per_checkpoint(1, 1500)  # learned from the growth
        cp.committed()
        cp.checkpoint()
        assert cp.restart_due  # 4,500 pages > RESTART_FRAMES
    finally:
        cp.close()
