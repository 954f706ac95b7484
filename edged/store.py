"""Durable, exactly-once storage of terminal records in SQLite, with group commit.

One writer thread owns the write connection. Requests hand it their record and wait; it takes
everything queued, writes it in one transaction, commits (WAL, ``synchronous=FULL``: the commit is
on disk when it returns) and only then wakes the requests, so a burst shares one fsync and no
answer goes out before its record is durable. Reads use their own connection (WAL lets them run
beside the writer).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from edged.errors import StoreError
from edged.migrations import migrate
from edged.model import Event, Replay

log = logging.getLogger(__name__)

# Outstanding work the writer may hold before new records are refused with a 503 (the terminal
# keeps them and sends them again): bounds memory during a replay storm.
MAX_PENDING_ITEMS = 4096
MAX_PENDING_BYTES = 64 * 1024 * 1024
BATCH_LIMIT = 512


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
    upstream_error: str | None = None  # why the upstream did not decide (edged/upstream.py)


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


_INSERT = """
INSERT INTO events (dedup_key, kind, push_type, serial, terminal, uuid, occurred_at, received_at,
    user_id, user_name, person_id, recognition, recognize_status, score, entry_mode,
    terminal_pass, alarm_code, alarm_status, trace_id, replayed, replay_reason, decision, reason,
    rule, source, response, raw, door, explain, upstream_error)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (dedup_key) DO NOTHING
"""


def _row(rec: Record) -> tuple[Any, ...]:
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
    )


class Store:
    """The state database: a writer thread for records, a read connection for lookups."""

    def __init__(
        self,
        path: Path | str,
        images_dir: Path | str | None = None,
        images_max_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self.images_dir = Path(images_dir) if images_dir else None
        self.images_max_bytes = images_max_bytes
        self.stats = StoreStats()
        # The highest event id retention may delete (the forwarding cursor: edged/outbox.py).
        self.prune_limit: Callable[[sqlite3.Connection], int] | None = None
        self.db = open_database(self.path)  # loop-thread reads, also runs migrations
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._writer_conn = connect(self.path)
        row = self._writer_conn.execute(
            "SELECT COALESCE(SUM(image_bytes), 0) FROM events WHERE image_path IS NOT NULL"
        ).fetchone()
        self.stats.images_bytes = int(row[0])
        self._files = _FileWriter(self.images_dir, self._snapshot_failed)
        self._thread = threading.Thread(target=self._run, name="edged-writer", daemon=True)
        self._thread.start()

    # ----- the async face -------------------------------------------------------------------

    async def save(self, record: Record) -> Stored:
        """Store a record durably (or find its first copy); returns after the commit."""
        size = len(record.event.image_b64 or "") + 2048
        return await self._submit(_Item(record, None, None, None, size))

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
        self._writer_conn.close()
        self.db.conn.close()

    # ----- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
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
            try:
                self._process(batch)
            except Exception:
                log.exception("writer: unexpected error")

    def _process(self, batch: list[_Item]) -> None:
        records = [i for i in batch if i.record is not None]
        jobs = [i for i in batch if i.job is not None]
        if records:
            self._commit_records(records)
        for item in jobs:
            self._commit_job(item)
        with self._lock:
            self.stats.pending_items -= len(batch)
            self.stats.pending_bytes -= sum(i.size for i in batch)
        if self.images_max_bytes and self.stats.images_bytes > self.images_max_bytes:
            self._prune_images()

    def _commit_records(self, items: list[_Item]) -> None:
        conn = self._writer_conn
        results: list[Stored] = []
        snapshots: list[tuple[Path, str, int]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in items:
                assert item.record is not None
                results.append(self._insert(conn, item.record, snapshots))
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._rollback(conn)
            message = f"cannot store records: {exc}"
            self.stats.last_error = message
            log.error("store: %s", message)
            error = StoreError(message)
            _resolve_all([(item, None, error) for item in items])
            return
        self.stats.commits += 1
        self.stats.last_commit_at = time.time()
        self.stats.last_error = None
        self.stats.records += len(results)
        self.stats.duplicates += sum(1 for stored in results if stored.duplicate)
        self.stats.images_bytes += sum(size for _, _, size in snapshots)
        self._files.write(snapshots)  # queued before anyone hears of the commit: see sync_files
        _resolve_all([(item, stored, None) for item, stored in zip(items, results, strict=True)])

    def _insert(
        self, conn: sqlite3.Connection, rec: Record, snapshots: list[tuple[Path, str, int]]
    ) -> Stored:
        cur = conn.execute(_INSERT, _row(rec))
        if cur.rowcount == 1:
            event_id = int(cur.lastrowid or 0)
            if rec.event.image_b64 and self.images_dir is not None:
                self._add_snapshot(conn, event_id, rec, snapshots)
            return Stored(event_id, False, rec.replay is not None, rec.response)
        row = conn.execute(
            "UPDATE events SET duplicates = duplicates + 1, last_duplicate_at = ? "
            "WHERE dedup_key = ? RETURNING id, replayed, response",
            (rec.received_at, rec.event.dedup_key),
        ).fetchone()
        return Stored(int(row["id"]), True, True, json.loads(row["response"]))

    def _add_snapshot(
        self,
        conn: sqlite3.Connection,
        event_id: int,
        rec: Record,
        snapshots: list[tuple[Path, str, int]],
    ) -> None:
        """Name the snapshot's file in the row; it is decoded and written after the commit."""
        assert self.images_dir is not None and rec.event.image_b64 is not None
        text = rec.event.image_b64.strip()
        size = _jpeg_b64_size(text)
        if size is None:
            return  # not a JPEG: keep nothing rather than an unknown blob
        relative = f"{time.strftime('%Y/%m/%d', time.gmtime(rec.received_at))}/{event_id}.jpg"
        conn.execute(
            "UPDATE events SET image_path = ?, image_bytes = ? WHERE id = ?",
            (relative, size, event_id),
        )
        snapshots.append((self.images_dir / relative, text, size))

    def _snapshot_failed(self, path: Path, size: int, error: OSError) -> None:
        """A snapshot file could not be written (file thread): the row forgets it."""
        assert self.images_dir is not None
        relative = str(path.relative_to(self.images_dir))
        with self._lock:
            self.stats.images_bytes -= size
            self.stats.images_failed += 1
        self.submit_nowait(
            lambda conn: conn.execute(
                "UPDATE events SET image_path = NULL, image_bytes = NULL WHERE image_path = ?",
                (relative,),
            )
        )
        if self.stats.images_failed == 1 or self.stats.images_failed % 100 == 0:
            log.error(
                "store: cannot write snapshot %s (%d so far): %s",
                relative,
                self.stats.images_failed,
                error,
            )

    def _commit_job(self, item: _Item) -> None:
        conn = self._writer_conn
        assert item.job is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = item.job(conn)
            conn.execute("COMMIT")
        except Exception as exc:
            self._rollback(conn)
            _resolve(item, None, exc)
            return
        _resolve(item, result, None)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _prune_images(self) -> None:
        """Delete the oldest snapshots until the images are under their quota."""
        assert self.images_dir is not None
        conn = self._writer_conn
        while self.stats.images_bytes > self.images_max_bytes:
            rows = conn.execute(
                "SELECT id, image_path, image_bytes FROM events WHERE image_path IS NOT NULL "
                "ORDER BY id LIMIT 200"
            ).fetchall()
            if not rows:
                self.stats.images_bytes = 0
                return
            for row in rows:
                self.stats.images_bytes -= int(row["image_bytes"] or 0)
                self.stats.images_pruned += 1
            self._files.delete([self.images_dir / r["image_path"] for r in rows])
            ids = ",".join(str(int(r["id"])) for r in rows)
            conn.execute(
                f"UPDATE events SET image_path = NULL, image_bytes = NULL WHERE id IN ({ids})"
            )

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
        # stay valid); records past prune_limit (not yet forwarded) stay too.
        limit = self.prune_limit(conn) if self.prune_limit is not None else -1
        rows = conn.execute(
            "SELECT id, image_path, image_bytes FROM events WHERE received_at < ? "
            "AND id < (SELECT MAX(id) FROM events) AND (? < 0 OR id <= ?) ORDER BY id LIMIT ?",
            (older_than, limit, limit, batch),
        ).fetchall()
        if not rows:
            return 0
        if self.images_dir is not None:
            images = [r for r in rows if r["image_path"]]
            self.stats.images_bytes -= sum(int(r["image_bytes"] or 0) for r in images)
            self._files.delete([self.images_dir / r["image_path"] for r in images])
        ids = ",".join(str(int(r["id"])) for r in rows)
        conn.execute(f"DELETE FROM events WHERE id IN ({ids})")
        return len(rows)

    def sync_files(self, timeout: float = 10.0) -> bool:
        """Wait until the snapshot files of everything committed so far are written."""
        return self._files.sync(timeout)

    def healthy(self) -> bool:
        """The writer runs and its last commit did not fail."""
        return self._thread.is_alive() and self.stats.last_error is None


class _FileWriter:
    """Writes snapshot files (and deletes pruned ones) in order, off the commit path.

    A snapshot is evidence, not the record: the record is durable at commit and answered then;
    its JPEG follows a moment later from this thread (not fsynced: after a power cut the newest
    snapshots may be missing, never the records). Deletes queue behind writes, so a pruned file
    is never written back.
    """

    # Snapshot text waiting to be written, at most: past it the writer thread waits, which
    # slows new commits down instead of letting memory grow during a replay burst.
    MAX_PENDING_BYTES = 2 * 1024 * 1024

    def __init__(self, root: Path | None, failed: Callable[[Path, int, OSError], None]) -> None:
        self.root = root
        self.failed = failed
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._pending = 0
        self._room = threading.Condition()
        self._dirs: set[Path] = set()
        self._thread = threading.Thread(target=self._run, name="edged-files", daemon=True)
        if root is not None:
            self._thread.start()

    def write(self, snapshots: list[tuple[Path, str, int]]) -> None:
        """Queue snapshots (base64 text and decoded size) to decode and write."""
        if not snapshots:
            return
        size = sum(len(text) for _, text, _ in snapshots)
        with self._room:
            self._room.wait_for(
                lambda: self._pending == 0 or self._pending + size <= self.MAX_PENDING_BYTES,
                timeout=10.0,
            )
            self._pending += size
        self._queue.put(("write", snapshots))

    def delete(self, paths: list[Path]) -> None:
        """Queue files to delete (after any queued write of them)."""
        if paths:
            self._queue.put(("delete", paths))

    def sync(self, timeout: float) -> bool:
        """Wait until everything queued so far is on the file system."""
        if not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(("mark", done))
        return done.wait(timeout)

    def close(self, timeout: float) -> None:
        """Finish what is queued and stop."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while (task := self._queue.get()) is not None:
            kind, items = task
            if kind == "write":
                for path, text, size in items:
                    self._write(path, text, size)
                with self._room:
                    self._pending -= sum(len(text) for _, text, _ in items)
                    self._room.notify_all()
            elif kind == "mark":
                items.set()
            else:
                for path in items:
                    with contextlib.suppress(OSError):
                        path.unlink(missing_ok=True)

    def _write(self, path: Path, text: str, size: int) -> None:
        try:
            data = binascii.a2b_base64(text)
            if len(data) != size:
                raise OSError(f"snapshot decodes to {len(data)} bytes, not {size}")
            if path.parent not in self._dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(path.parent)
            path.write_bytes(data)
        except (OSError, binascii.Error, ValueError) as exc:
            self._dirs.discard(path.parent)
            self.failed(path, size, exc if isinstance(exc, OSError) else OSError(str(exc)))


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
        if fut.cancelled():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)
