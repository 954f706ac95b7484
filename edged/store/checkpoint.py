"""WAL checkpoints beside the writer thread, never inside one of its commits.

SQLite in WAL mode appends each commit to the ``-wal`` file and copies the pages back into the
database file in a checkpoint. By default the commit that takes the log past
``wal_autocheckpoint`` (1000 pages) runs the checkpoint itself before it returns: it copies
every page and syncs the log and the database file, two more fsyncs. On an SD card that commit
takes 10-30 ms longer, and so does every record queued behind it, a person at the door among
them (docs/performance.md, "Replay after an outage").

The store's writer connection therefore has ``wal_autocheckpoint = 0``, and this thread, on a
connection of its own, runs ``PRAGMA wal_checkpoint(PASSIVE)``: it copies what no reader still
needs, waits for neither the writer nor a reader, and releases the GIL while it works. It runs
about as often as SQLite would have: when the writer has made enough commits since the last
checkpoint for the log to hold about ``TARGET_FRAMES`` pages (it learns the pages per commit
from the frames each checkpoint found), and after ``QUIET_SECONDS`` at the latest once anything
was committed, so the pages a site rewrites all the time (indexes, counters) are not written
to the card more often than before. A checkpoint that fails (a full disk) is logged once and
tried again at the next occasion; the log then grows, and nothing is lost: every commit is
durable in the log, whatever the checkpoints do.

The log starts again from its beginning only at a write that finds every page of it copied. A
checkpoint beside a writer that never pauses (a replay) always ends a few commits behind, so
the log would grow for as long as the writes go on. When it has grown past ``RESTART_FRAMES``
pages, the writer itself checkpoints before its next commit (:meth:`Checkpointer.finish`): it
copies only what came since this thread's checkpoint, there is no other writer to come between,
and the commit that follows restarts the log.

Connections other than the writer's (the admin API's, the people sync's, commands') keep
SQLite's own automatic checkpoints: they write seldom, and the log is kept short here.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

TARGET_FRAMES = 1000  # pages in the log per checkpoint: SQLite's wal_autocheckpoint default
QUIET_SECONDS = 10.0  # the longest anything committed waits for its checkpoint
MAX_COMMITS = 1000  # a checkpoint after this many commits at the latest
FIRST_COMMITS = 250  # before it has learned: a record's commit writes 3-4 pages (2 KiB pages)
RESTART_FRAMES = 4 * TARGET_FRAMES  # a log this long is restarted by the writer's checkpoint


@dataclass
class CheckpointStats:
    """What the checkpoints did (tests, benchmarks)."""

    checkpoints: int = 0
    frames: int = 0  # pages found in the log, summed over the checkpoints
    finishes: int = 0  # checkpoints the writer ran to restart a log that grew too long
    failures: int = 0


def commits_per_checkpoint(commits: int, frames: int, target: int = TARGET_FRAMES) -> int:
    """How many commits fill the log to about ``target`` pages, having seen ``frames`` pages
    written by ``commits`` commits (at least 1, at most ``MAX_COMMITS``)."""
    if commits <= 0 or frames <= 0:
        return MAX_COMMITS
    return max(1, min(MAX_COMMITS, round(target * commits / frames)))


class Checkpointer:
    """A thread that checkpoints the database whose writer calls :meth:`committed`."""

    def __init__(self, conn: sqlite3.Connection, quiet: float = QUIET_SECONDS) -> None:
        self.stats = CheckpointStats()
        self.quiet = quiet
        self._conn = conn  # used by the thread only, closed by close()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._commits = 0  # since the last checkpoint (under _lock)
        self._every = FIRST_COMMITS  # commits per checkpoint, learned from each checkpoint
        self._log_pages = 0  # pages in the log at the last checkpoint
        self._failing = False
        self._closing = False
        # The log grew past RESTART_FRAMES: the writer checkpoints before its next commit.
        self.restart_due = False
        self._thread = threading.Thread(target=self._run, name="edged-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """The writer made a commit (writer thread; cheap: a count and maybe a wake-up)."""
        with self._lock:
            self._commits += 1
            due = self._commits >= self._every
        if due:
            self._wake.set()

    def checkpoint(self) -> None:
        """Checkpoint now, whatever was committed (the thread's own step; tests call it)."""
        with self._lock:
            commits, self._commits = self._commits, 0
            self._wake.clear()
        try:
            _busy, frames, _copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self.stats.failures += 1
            if not self._failing:
                log.warning("store: WAL checkpoint failed, the log grows until one works: %s", exc)
                self._failing = True
            return
        if self._failing:
            log.info("store: WAL checkpoints work again")
            self._failing = False
        self.stats.checkpoints += 1
        self.stats.frames += max(frames, 0)
        # the pages written since the last checkpoint: the log's growth, or all of it when it
        # started again (then the estimate errs towards fewer checkpoints)
        grown = frames - self._log_pages if frames >= self._log_pages else frames
        self._log_pages = frames
        if commits and grown > 0:
            with self._lock:
                self._every = commits_per_checkpoint(commits, grown)
        if frames > RESTART_FRAMES:
            self.restart_due = True

    def finish(self, conn: sqlite3.Connection) -> None:
        """On the writer's connection, between two of its commits: copy the rest of a log that
        has grown too long, so that the next commit starts it again (writer thread)."""
        self.restart_due = False
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.debug("store: WAL checkpoint before a commit failed: %s", exc)
            return
        self.stats.finishes += 1

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (after a last checkpoint of what was committed) and close."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._conn.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.quiet)
            with self._lock:
                commits = self._commits
            if commits:
                self.checkpoint()
            else:
                self._wake.clear()
            if self._closing:
                return
