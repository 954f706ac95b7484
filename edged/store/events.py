"""Durable, exactly-once storage of terminal records in SQLite, with group commit.

One writer thread owns the write connection. Requests hand it their record and wait; it takes
everything queued, writes it in one transaction, commits (WAL, ``synchronous=FULL``: the commit is
on disk when it returns) and only then wakes the requests, so a burst shares one fsync and no
answer goes out before its record is durable. Reads use their own connection (WAL lets them run
beside the writer).

A duplicate costs a read, not a commit: :meth:`Store.find` answers it from the first copy, and
the first copy's duplicate counter is kept in memory and written with the next commit that
happens anyway (or after ``DUPLICATES_FLUSH_SECONDS`` of quiet): a crash loses at most those
counts. Bulk records (a back-fill page) are built and stored in the writer thread, in chunks
that ride along in the live records' commits.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import itertools
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from edged.errors import StoreError
from edged.histogram import Histogram
from edged.model import Event, Replay
from edged.store import doorlog, snapshots
from edged.store.checkpoint import Checkpointer
from edged.store.migrations import PAGE_SIZE, migrate
from edged.store.snapshots import Placed
from edged.store.urgency import Urgency

log = logging.getLogger(__name__)

# Outstanding work the writer may hold before new records are refused with a 503 (the terminal
# keeps them and sends them again): bounds memory during a replay storm.
MAX_PENDING_ITEMS = 4096
MAX_PENDING_BYTES = 64 * 1024 * 1024
BATCH_LIMIT = 512
COMMIT_SAMPLES = 128  # record commits kept for commit_estimate()
# A bulk save (back-fill) is stored this many records per commit. A live record that finds a
# bulk save waiting goes ahead of its next chunk, in a commit of its own; the commit after that
# carries the chunk (with whatever live records came meanwhile). So a live request waits for at
# most the commit in flight, and a steady stream of live records slows the bulk at most by half.
BULK_CHUNK = 32
# Duplicate counters not yet written are written after this long without any commit.
DUPLICATES_FLUSH_SECONDS = 5.0
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # records in one commit


def connect(path: Path | str, readonly: bool = False) -> sqlite3.Connection:
    """A connection with edged's pragmas; transactions are explicit (autocommit mode)."""
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            # only takes effect while the file is new (before WAL mode writes its first page)
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


def open_database(path: Path | str) -> sqlite_utils.Database:
    """Open (creating and migrating as needed) the state database."""
    conn = connect(path)
    try:
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"{path}: cannot migrate database: {exc}") from None
    return sqlite_utils.Database(conn)


def open_connection(path: Path | str) -> sqlite3.Connection:
    """Open (creating and migrating as needed) the state database for a command: its
    connection, for the store's and the access package's functions; the caller closes it."""
    return open_database(path).conn


# A door-log row (at, door, action, source, detail): the writer adds the event's id to detail.
DoorRow = tuple[float, str, str, str, dict[str, Any]]


@dataclass(slots=True)
class Record:
    """A normalised record on its way to the database."""

    event: Event
    received_at: float
    replay: Replay | None
    terminal: str | None
    response: dict[str, Any]
    decision: str | None = None  # "pass" / "deny" for remote-auth requests
    reason: str | None = None
    rule: str | None = None
    person_id: str | None = None
    source: str | None = None  # who decided: "cache", "upstream"
    door: str | None = None  # the door the terminal serves
    explain: list[str] | None = None  # the decision's steps, for `edged why`
    upstream_error: str | None = None  # why the upstream did not decide (edged/upstream/client.py)
    # What the door does with the decision (edged/doors/control.py, Doors.plan): "unlocked" or
    # "refused: <why>", and the door-log rows that ride in the record's own commit.
    door_outcome: str | None = None
    door_log: list[DoorRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Stored:
    """What the database holds for a record after commit."""

    id: int
    duplicate: bool
    replayed: bool
    response: dict[str, Any]


@dataclass(slots=True)
class _Item:
    record: Record | None
    job: Callable[[sqlite3.Connection], Any] | None
    future: asyncio.Future[Any] | None
    loop: asyncio.AbstractEventLoop | None
    size: int = 0
    # Prepared by the caller's thread, so the writer (on every waiting request's path) only
    # places the snapshot and executes: the row's columns, and the snapshot's text and size.
    row: tuple[Any, ...] = ()
    snapshot: tuple[str, int] | None = None
    released: bool = False  # its share of the pending budget was given back
    # a bulk save: records built in the writer thread, stored BULK_CHUNK per commit
    bulk: Iterator[Record] | None = None
    added: int = 0  # how many of the bulk's records were new
    drained: bool = False  # the bulk's last chunk was built: no records are left
    counted: bool = True  # a duplicate counts on its first copy (not a back-filled one)


@dataclass
class StoreStats:
    """Counters shown by /readyz and the benchmarks."""

    commits: int = 0
    records: int = 0
    duplicates: int = 0
    images_bytes: int = 0
    images_pruned: int = 0
    images_failed: int = 0
    last_error: str | None = None
    last_commit_at: float | None = None
    pending_items: int = 0
    pending_bytes: int = 0
    refused_commits: int = 0  # commits refused since last_error was set
    # How long record commits take and how many records each carries (edged/admin/metrics.py)
    commit_seconds: Histogram = field(default_factory=Histogram)
    batch_records: Histogram = field(default_factory=lambda: Histogram(BATCH_BOUNDS))


_FIND = "SELECT id, response FROM events WHERE dedup_key = ?"
_COUNT_DUPLICATES = (
    "UPDATE events SET duplicates = duplicates + ?, "
    "last_duplicate_at = MAX(COALESCE(last_duplicate_at, 0), ?) WHERE id = ?"
)
_FORGET_SNAPSHOT = "UPDATE events SET image_path = NULL, image_offset = NULL, image_bytes = NULL "

_INSERT = """
INSERT INTO events (dedup_key, kind, push_type, serial, terminal, uuid, occurred_at, received_at,
    user_id, user_name, person_id, recognition, recognize_status, score, entry_mode,
    terminal_pass, alarm_code, alarm_status, trace_id, replayed, replay_reason, decision, reason,
    rule, source, response, raw, door, explain, upstream_error, door_outcome, image_path,
    image_offset, image_bytes)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (dedup_key) DO NOTHING
"""


def _row(rec: Record) -> tuple[Any, ...]:
    """The record's columns, up to the snapshot's (which the writer adds when it places it)."""
    ev = rec.event
    user = ev.user
    return (
        ev.dedup_key,
        ev.kind.value,
        ev.push_type,
        ev.serial,
        rec.terminal,
        ev.uuid,
        ev.occurred_at,
        rec.received_at,
        user.user_id if user else None,
        user.name if user else None,
        rec.person_id,
        ev.recognition_type,
        ev.recognize_status,
        ev.score,
        ev.entry_mode,
        None if ev.terminal_pass is None else int(ev.terminal_pass),
        ev.alarm_code,
        ev.alarm_status,
        ev.trace_id,
        int(rec.replay is not None),
        rec.replay.value if rec.replay else None,
        rec.decision,
        rec.reason,
        rec.rule,
        rec.source,
        json.dumps(rec.response, separators=(",", ":")),
        json.dumps(ev.raw, separators=(",", ":"), default=str),
        rec.door,
        None if rec.explain is None else json.dumps(rec.explain, ensure_ascii=False),
        rec.upstream_error,
        rec.door_outcome,
    )


class Store:
    """The state database: a writer thread for records, a read connection for lookups."""

    def __init__(
        self,
        path: Path | str,
        images_dir: Path | str | None = None,
        images_max_bytes: int = 0,
        prune_limit: Callable[[sqlite3.Connection], int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.images_dir = Path(images_dir) if images_dir else None
        self.images_max_bytes = images_max_bytes
        self.stats = StoreStats()
        # The highest event id retention may delete (the forwarding cursor: upstream/outbox.py).
        self.prune_limit = prune_limit
        # How long the latest record commits took (writer thread appends, anyone reads).
        self._commit_seconds: deque[float] = deque(maxlen=COMMIT_SAMPLES)
        # Called on the saving thread just before a record is queued (edged/doors/control.py, plan):
        # they may fill the record's door outcome and the door-log rows of its commit.
        self.before_commit: list[Callable[[Record], None]] = []
        # Duplicates seen and not yet written: event id -> [count, last seen] (under _lock).
        self._unwritten: dict[int, list[float]] = {}
        self._bulk_deferred = False  # the last commit let live records ahead of a bulk chunk
        # Remote-auth answers in flight (the receiver marks them): a bulk chunk waits for them.
        self.urgency = Urgency()
        self.db = open_database(self.path)  # loop-thread reads, also runs migrations
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writer_conn = connect(self.path)
        # Checkpoints run beside the writer, not in its commits (edged/store/checkpoint.py).
        self._writer_conn.execute("PRAGMA wal_autocheckpoint = 0")
        self.checkpointer = Checkpointer(connect(self.path))
        row = self._writer_conn.execute(
            "SELECT COALESCE(SUM(image_bytes), 0) FROM events WHERE image_path IS NOT NULL"
        ).fetchone()
        self.stats.images_bytes = int(row[0])
        self._files = snapshots.Writer(self.images_dir, self._snapshot_failed)
        self._placer = (
            snapshots.Placer(self.images_dir, snapshots.segment_bytes(images_max_bytes))
            if self.images_dir is not None
            else None
        )
        self._thread = threading.Thread(target=self._run, name="edged-writer", daemon=True)
        self._thread.start()

    @property
    def reader(self) -> sqlite3.Connection:
        """The read connection (loop thread): what the store's and the access package's read
        functions take (edged/store/presence.py, queries.py, edged/access/)."""
        return self.db.conn

    # ----- the async face -------------------------------------------------------------------

    async def save(self, record: Record) -> Stored:
        """Store a record durably (or find its first copy); returns after the commit."""
        for hook in self.before_commit:
            try:
                hook(record)
            except Exception:  # the record is stored whatever a hook does
                log.exception("store: before-commit hook %r failed", hook)
        size = len(record.event.image_b64 or "") + 2048
        item = _Item(record, None, None, None, size, _row(record), self._snapshot_of(record))
        return await self._submit(item)

    def find(self, key: str, seen_at: float) -> Stored | None:
        """The first copy of a record already stored, counted as a duplicate; None: not stored.

        One indexed read on the caller's connection: no transaction, nothing written. The count
        is written later (:meth:`flush_duplicates`). A copy still waiting for its commit is not
        found here; the writer then finds it by its unique key.
        """
        try:
            row = self.db.conn.execute(_FIND, (key,)).fetchone()
        except UnicodeEncodeError:
            return None  # not text SQLite can hold: never stored, so no first copy
        except sqlite3.Error as exc:
            raise StoreError(f"cannot look up a record: {exc}") from None
        if row is None:
            return None
        self._count_duplicate(int(row["id"]), seen_at)
        return Stored(int(row["id"]), True, True, json.loads(row["response"]))

    def _count_duplicate(self, event_id: int, seen_at: float) -> None:
        with self._lock:
            self.stats.duplicates += 1
            entry = self._unwritten.setdefault(event_id, [0, seen_at])
            entry[0] += 1
            entry[1] = max(entry[1], seen_at)

    def unwritten_duplicates(self, event_id: int) -> int:
        """Duplicates of an event counted in memory and not written yet (what a reader adds)."""
        with self._lock:
            entry = self._unwritten.get(event_id)
        return int(entry[0]) if entry else 0

    async def flush_duplicates(self) -> None:
        """Write the duplicate counters kept in memory now (they also ride the next commit)."""
        await self.run(lambda conn: None)

    async def save_bulk(self, records: Iterator[Record]) -> int:
        """Store records that nobody waits on one by one (a back-fill page); returns how many
        were new.

        ``records`` is consumed in the writer thread, so building them (normalising) does not
        hold the event loop; they are stored ``BULK_CHUNK`` per commit, each chunk in the commit
        of whatever live records are waiting then. Records already stored are skipped, not
        counted as duplicates.
        """
        return int(await self._submit(_Item(None, None, None, None, 4096, bulk=records)))

    async def run(self, job: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``job(conn)`` in the writer thread inside a transaction; return its result."""
        return await self._submit(_Item(None, job, None, None, 256))

    def submit_nowait(self, job: Callable[[sqlite3.Connection], Any]) -> None:
        """Queue a write whose result nobody waits for (e.g. a heartbeat's 'seen')."""
        self._put(_Item(None, job, None, None, 256))

    async def _submit(self, item: _Item) -> Any:
        loop = asyncio.get_running_loop()
        item.future = loop.create_future()
        item.loop = loop
        self._put(item)
        return await item.future

    def _put(self, item: _Item) -> None:
        with self._lock:
            busy = (
                self.stats.pending_items >= MAX_PENDING_ITEMS
                or self.stats.pending_bytes + item.size > MAX_PENDING_BYTES
            )
            if busy and item.record is not None:
                raise StoreError("the store is busy: too many records waiting for disk")
            if not self._thread.is_alive():
                raise StoreError("the store's writer has stopped")
            self.stats.pending_items += 1
            self.stats.pending_bytes += item.size
        self._queue.put(item)

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued writes and close the database."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._files.close(timeout)
        self.checkpointer.close(timeout)
        self._writer_conn.close()
        self.db.conn.close()

    # ----- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                self._drain()
                return
            batch = [item]
            while len(batch) < BATCH_LIMIT:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # handle after this batch
                    break
                batch.append(nxt)
            self._hold_for_live(batch)
            try:
                self._process(batch)
            except Exception as exc:
                # Nothing may leave a request unanswered or the connection in a transaction.
                log.exception("writer: unexpected error")
                self._rollback(self._writer_conn)
                _resolve_all([(i, None, StoreError(f"cannot store: {exc!r}")) for i in batch])

    def _hold_for_live(self, batch: list[_Item]) -> None:
        """A batch with a bulk chunk and no record waits, while a remote-auth answer is being
        given, for that answer's record (edged/store/urgency.py): it is added to ``batch``."""
        if not self.urgency.count or any(i.record is not None for i in batch):
            return
        if all(i.bulk is None for i in batch):
            return

        def arrived(timeout: float) -> bool:
            try:
                nxt = self._queue.get(timeout=timeout)
            except queue.Empty:
                return False
            if nxt is None:  # closing: handled after this batch
                self._queue.put(None)
                return True
            batch.append(nxt)
            return nxt.record is not None

        self.urgency.hold_bulk(arrived)

    def _next(self) -> _Item | None:
        """The next queued item; with duplicate counts unwritten, write them after a quiet
        ``DUPLICATES_FLUSH_SECONDS`` first."""
        while self._unwritten:
            try:
                return self._queue.get(timeout=DUPLICATES_FLUSH_SECONDS)
            except queue.Empty:
                self._commit_job(_Item(None, lambda conn: None, None, None))
        return self._queue.get()

    def _drain(self) -> None:
        """At close: write the duplicate counts; refuse whatever is still queued behind."""
        if self._unwritten:
            self._commit_job(_Item(None, lambda conn: None, None, None))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _resolve(item, None, StoreError("the store is closed"))

    def _process(self, batch: list[_Item]) -> None:
        records = [i for i in batch if i.record is not None]
        jobs = [i for i in batch if i.job is not None]
        bulk = next((i for i in batch if i.bulk is not None), None)
        again: list[_Item] = []
        # Live records go ahead of a bulk chunk, once in a row (BULK_CHUNK above).
        defer = bulk is not None and bool(records) and not self._bulk_deferred
        self._bulk_deferred = defer
        try:
            chunk = self._chunk(bulk) if bulk is not None and not defer else []
            if records or chunk:
                results = self._commit_records(records + chunk)
                if bulk is not None and not defer:
                    self._bulk_done(bulk, chunk, results)
            for item in jobs:
                self._commit_job(item)
            again = [i for i in batch if i.bulk is not None]
        finally:  # the budget is given back whatever happened
            self._release([i for i in batch if i not in again])
        for item in again:
            self._queue.put(item)  # the rest of a bulk save: after what queued meanwhile
        if self.images_max_bytes and self.stats.images_bytes > self.images_max_bytes:
            self._prune_images()

    def _release(self, items: list[_Item]) -> None:
        """Give back the pending budget of ``items`` (once each): before they are answered, so
        whoever hears the answer finds the budget free."""
        fresh = [i for i in items if not i.released]
        for item in fresh:
            item.released = True
        with self._lock:
            self.stats.pending_items -= len(fresh)
            self.stats.pending_bytes -= sum(i.size for i in fresh)

    def _chunk(self, bulk: _Item) -> list[_Item]:
        """The next records of a bulk save, built here in the writer thread: up to
        ``BULK_CHUNK``, fewer when a remote-auth answer begins meanwhile (its record is then
        committed after a short chunk, not after a whole one built and stored). An answer
        marked before the chunk began was held for already (:meth:`_hold_for_live`)."""
        assert bulk.bulk is not None
        chunk: list[_Item] = []
        bulk.drained = True
        marks = self.urgency.marks
        try:
            for rec in bulk.bulk:
                chunk.append(
                    _Item(rec, None, None, None, row=_row(rec), counted=False, released=True)
                )
                if len(chunk) >= BULK_CHUNK or self.urgency.marks != marks:
                    bulk.drained = False
                    break
        except Exception as exc:
            log.exception("store: cannot build bulk records")
            bulk.bulk = None
            _resolve(bulk, None, StoreError(f"cannot build records: {exc}"))
            return []
        if not chunk:
            bulk.bulk = None
            _resolve(bulk, bulk.added, None)
        return chunk

    def _bulk_done(self, bulk: _Item, chunk: list[_Item], results: list[Stored] | None) -> None:
        """Count a stored chunk; answer the bulk save when it failed or has no records left."""
        if bulk.bulk is None:
            return
        if results is None:
            bulk.bulk = None
            _resolve(bulk, None, StoreError(self.stats.last_error or "cannot store records"))
            return
        bulk.added += sum(1 for stored in results[-len(chunk) :] if not stored.duplicate)
        if bulk.drained:
            bulk.bulk = None
            _resolve(bulk, bulk.added, None)

    def _commit_records(self, items: list[_Item]) -> list[Stored] | None:
        """Write and commit ``items`` in one transaction, then answer them; their Stored, or
        None when any of them could not be stored.

        On any error the transaction is rolled back. An error of the environment (disk full,
        I/O) fails them all; any other is one record's, so each is tried alone: one bad record
        fails only its own answer.
        """
        conn = self._writer_conn
        results: list[Stored] = []
        pending: list[Placed] = []
        started = time.perf_counter()
        counts = self._take_unwritten()
        try:
            self._begin(conn)
            for item in items:
                results.append(self._insert(conn, item, pending))
            self._write_duplicates(conn, counts)
            conn.execute("COMMIT")
        except Exception as exc:
            self._rollback(conn)
            self._keep_unwritten(counts)
            if len(items) > 1 and not _environmental(exc):
                alone = [self._commit_records([item]) for item in items]
                if any(result is None for result in alone):
                    return None
                return [result[0] for result in alone if result]
            error = self._refused(exc)
            self._release(items)
            _resolve_all([(item, None, error) for item in items])
            return None
        self._committed()
        took = time.perf_counter() - started
        self._commit_seconds.append(took)
        self.stats.commit_seconds.observe(took)
        self.stats.batch_records.observe(len(items))
        self.stats.commits += 1
        self.stats.last_commit_at = time.time()
        self.stats.records += sum(1 for stored in results if not stored.duplicate)
        self.stats.images_bytes += sum(size for _, _, _, size in pending)
        # The answers go out first; the snapshots follow at once, and no sync_files() can come
        # between the two (it waits for the sender): whoever hears of the commit and syncs
        # finds its snapshots written.
        outcomes: list[tuple[_Item, Any, BaseException | None]] = [
            (item, stored, None) for item, stored in zip(items, results, strict=True)
        ]
        self._release(items)
        with self._files.holding():
            _resolve_all(outcomes)
            self._files.write(pending)
        return results

    def _refused(self, exc: Exception) -> StoreError:
        """The error for records that could not be committed, logged once a failure spell.

        A failing disk is an ERROR when it starts and INFO when it ends (``_committed``); each
        refusal in between is DEBUG (the receiver's 503s are counted and rate-limited). A
        record the database refuses by its values (which normalize.check_values should have
        caught) is a WARNING and leaves the store healthy.
        """
        if not _environmental(exc):
            log.warning("store: a record cannot be stored: %r", exc)
            return StoreError(f"record cannot be stored: {exc!r}")
        message = f"cannot store records: {exc}"
        self.stats.refused_commits += 1
        if self.stats.last_error is None:
            log.error("store: %s (answering 503 until a commit succeeds)", message)
        else:
            log.debug("store: %s", message)
        self.stats.last_error = message
        return StoreError(message)

    def _committed(self) -> None:
        """A commit succeeded: count it for the checkpoints; end a failure spell, with one
        INFO line."""
        self.checkpointer.committed()
        if self.stats.last_error is not None:
            log.info(
                "store: writing again; %d commits refused meanwhile", self.stats.refused_commits
            )
            self.stats.last_error = None
            self.stats.refused_commits = 0

    def _insert(self, conn: sqlite3.Connection, item: _Item, pending: list[Placed]) -> Stored:
        rec = item.record
        assert rec is not None
        placer, placed = self._placer, None
        if item.snapshot is not None and placer is not None:  # placed in the row at commit
            text, size = item.snapshot
            placed = (*placer.place(size), text, size)
        image = (placed[0], placed[1], placed[3]) if placed else (None, None, None)
        cur = conn.execute(_INSERT, item.row + image)
        if cur.rowcount == 1:
            if placed is not None:
                pending.append(placed)
            event_id = int(cur.lastrowid or 0)
            _insert_door_log(conn, rec.door_log, event_id)
            return Stored(event_id, False, rec.replay is not None, rec.response)
        if placed is not None and placer is not None:
            placer.unplace(placed[1], placed[3])  # a duplicate keeps the first's
        if not item.counted:
            return Stored(0, True, True, {})
        row = conn.execute(_FIND, (rec.event.dedup_key,)).fetchone()
        self._count_duplicate(int(row["id"]), rec.received_at)
        return Stored(int(row["id"]), True, True, json.loads(row["response"]))

    def _take_unwritten(self) -> dict[int, list[float]]:
        with self._lock:
            counts, self._unwritten = self._unwritten, {}
        return counts

    def _keep_unwritten(self, counts: dict[int, list[float]]) -> None:
        """Counts whose commit failed: back in memory for the next one."""
        with self._lock:
            for event_id, (count, last) in counts.items():
                entry = self._unwritten.setdefault(event_id, [0, last])
                entry[0] += count
                entry[1] = max(entry[1], last)

    def _write_duplicates(self, conn: sqlite3.Connection, counts: dict[int, list[float]]) -> None:
        """Add the counts taken from memory (inside the caller's transaction)."""
        if counts:
            conn.executemany(
                _COUNT_DUPLICATES, [(int(n), last, i) for i, (n, last) in counts.items()]
            )

    def _snapshot_of(self, rec: Record) -> tuple[str, int] | None:
        """The record's snapshot to keep (base64 text, decoded size); None: not kept.

        Its place is given by the writer, in the row at commit; the bytes are decoded and
        written after it.
        """
        if not rec.event.image_b64 or self._placer is None:
            return None
        text = rec.event.image_b64.strip()
        size = _jpeg_b64_size(text)
        if size is None:
            return None  # not a JPEG: keep nothing rather than an unknown blob
        return text, size

    def _snapshot_failed(self, name: str, offset: int, size: int, reason: str) -> None:
        """A snapshot could not be written (snapshot threads): the row forgets it."""
        with self._lock:
            self.stats.images_bytes -= size
            self.stats.images_failed += 1
            failed = self.stats.images_failed
        self.submit_nowait(
            lambda conn: conn.execute(
                _FORGET_SNAPSHOT + "WHERE image_path = ? AND image_offset = ?", (name, offset)
            )
        )
        if failed == 1 or failed % 100 == 0:
            log.error(
                "store: cannot write snapshot %s@%d (%d so far): %s", name, offset, failed, reason
            )

    def _commit_job(self, item: _Item) -> None:
        conn = self._writer_conn
        assert item.job is not None
        counts = self._take_unwritten()
        try:
            self._begin(conn)
            result = item.job(conn)
            self._write_duplicates(conn, counts)
            conn.execute("COMMIT")
        except Exception as exc:
            self._rollback(conn)
            self._keep_unwritten(counts)
            self._release([item])
            _resolve(item, None, exc)
            return
        self.checkpointer.committed()
        self._release([item])
        _resolve(item, result, None)

    def _begin(self, conn: sqlite3.Connection) -> None:
        """Open the writer's transaction; first restart a WAL grown too long
        (edged/store/checkpoint.py)."""
        if self.checkpointer.restart_due:
            self.checkpointer.finish(conn)
        conn.execute("BEGIN IMMEDIATE")

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _prune_images(self) -> None:
        """Delete the oldest segments until the snapshots are under their quota."""
        conn = self._writer_conn
        while self.stats.images_bytes > self.images_max_bytes:
            row = conn.execute(
                "SELECT image_path FROM events WHERE image_path IS NOT NULL "
                "ORDER BY image_path LIMIT 1"
            ).fetchone()
            if row is None:
                self.stats.images_bytes = 0
                return
            name = str(row[0])
            count, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(image_bytes), 0) FROM events WHERE image_path = ?",
                (name,),
            ).fetchone()
            conn.execute(_FORGET_SNAPSHOT + "WHERE image_path = ?", (name,))
            self.stats.images_bytes -= int(size)
            self.stats.images_pruned += int(count)
            self._drop_segments([name])

    def _drop_segments(self, names: list[str]) -> None:
        if self._placer is not None:
            for name in names:
                self._placer.retire(name)
        self._files.delete(names)

    # ----- maintenance ----------------------------------------------------------------------

    async def prune_events(self, older_than: float, batch: int = 1000) -> int:
        """Delete records received before ``older_than`` (and their images), in batches."""
        total = 0
        while True:
            removed = await self.run(lambda conn: self._prune_batch(conn, older_than, batch))
            total += removed
            if removed < batch:
                return total

    def _prune_batch(self, conn: sqlite3.Connection, older_than: float, batch: int) -> int:
        # The newest record always stays, so ids never restart from 1 (cursors over events.id
        # stay valid); records past prune_limit (not yet forwarded) stay too. Records go in the
        # order they arrived (ids), up to the first one received after ``older_than``: no index
        # on received_at to update with every record.
        limit = self.prune_limit(conn) if self.prune_limit is not None else -1
        oldest = conn.execute(
            "SELECT id, received_at, image_path, image_bytes FROM events "
            "WHERE id < (SELECT MAX(id) FROM events) AND (? < 0 OR id <= ?) ORDER BY id LIMIT ?",
            (limit, limit, batch),
        ).fetchall()
        rows = list(itertools.takewhile(lambda r: r["received_at"] < older_than, oldest))
        if not rows:
            return 0
        ids = ",".join(str(int(r["id"])) for r in rows)
        conn.execute(f"DELETE FROM events WHERE id IN ({ids})")
        images = [r for r in rows if r["image_path"]]
        if images:
            self.stats.images_bytes -= sum(int(r["image_bytes"] or 0) for r in images)
            # a segment goes with the last record that refers to it
            names = {str(r["image_path"]) for r in images}
            unused = [
                name
                for name in sorted(names)
                if conn.execute(
                    "SELECT 1 FROM events WHERE image_path = ? LIMIT 1", (name,)
                ).fetchone()
                is None
            ]
            self._drop_segments(unused)
        return len(rows)

    def malformed(self) -> dict[str, Any]:
        """How many malformed records are stored, and the newest one (None: none)."""
        conn = self.db.conn
        count = conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'malformed'").fetchone()
        row = conn.execute(
            "SELECT id, received_at, serial, terminal, reason FROM events "
            "WHERE kind = 'malformed' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return {"count": int(count[0]), "last": dict(row) if row is not None else None}

    def commit_estimate(self) -> float:
        """Seconds a record's commit takes, at the 95th percentile of the latest ones (0: none
        yet): what an answer that still has to be stored must allow for its storing."""
        recent = sorted(self._commit_seconds)
        return recent[int(len(recent) * 0.95)] if recent else 0.0

    def sync_files(self, timeout: float = 10.0) -> bool:
        """Wait until the snapshot files of everything committed so far are written."""
        return self._files.sync(timeout)

    def note_door_outcome(self, event_id: int, outcome: str) -> None:
        """Correct a stored record's door outcome (queued: the door refused after the commit)."""
        self.submit_nowait(
            lambda conn: conn.execute(
                "UPDATE events SET door_outcome = ? WHERE id = ?", (outcome, event_id)
            )
        )

    def healthy(self) -> bool:
        """The writer runs and its last commit did not fail."""
        return self._thread.is_alive() and self.stats.last_error is None


def _jpeg_b64_size(text: str) -> int | None:
    """The decoded size of base64 text that starts a JPEG, without decoding it all.

    Whitespace inside the text (some encoders wrap lines) makes the size uncertain: such text
    is decoded here once to know it.
    """
    try:
        head = binascii.a2b_base64(text[:8])
    except (binascii.Error, ValueError):
        return None
    if not head.startswith(b"\xff\xd8"):
        return None
    if len(text) % 4 == 0 and text.isascii() and not any(c in text for c in " \n\r\t"):
        return len(text) // 4 * 3 - text[-2:].count("=")
    try:
        return len(binascii.a2b_base64(text))
    except (binascii.Error, ValueError):
        return None


def _insert_door_log(conn: sqlite3.Connection, rows: list[DoorRow], event_id: int) -> None:
    """The door-log rows of a record, in the record's transaction, naming its event."""
    for at, door, action, source, detail in rows:
        text = json.dumps({**detail, "event": event_id}, separators=(",", ":"))
        doorlog.insert(conn, (at, door, action, source, text))


def _environmental(exc: BaseException) -> bool:
    """The error is the disk's or the database's (full, I/O, locked), not one record's."""
    return isinstance(exc, sqlite3.OperationalError | OSError)


def _resolve(item: _Item, result: Any, error: BaseException | None) -> None:
    _resolve_all([(item, result, error)])


def _resolve_all(outcomes: list[tuple[_Item, Any, BaseException | None]]) -> None:
    """Wake the waiting requests: one wake-up of each event loop per batch, not per record."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
    for item, result, error in outcomes:
        if item.future is None or item.loop is None:
            if error is not None:
                log.warning("store: background write failed: %s", error)
            continue
        by_loop.setdefault(item.loop, []).append((item.future, result, error))
    for loop, waiting in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, waiting)


def _settle(waiting: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, error in waiting:
        if fut.done():  # cancelled, or already answered
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)
