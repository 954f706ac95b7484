"""Terminals' snapshots as JPEGs appended to segment files, written by a small helper process.

A push carries its snapshot as about 60 KB of base64. Keeping one file per snapshot costs a file
creation per record (inode, directory entry, journal), and decoding the base64 holds the GIL
that the receiver needs. So:

- snapshots go one after another into *segments*, ``seg-<number>.jpegs`` under the images
  folder, each at most ``segment_bytes()``; every row names its segment, offset and size
  (``image_path``, ``image_offset``, ``image_bytes``), and each snapshot is a complete JPEG at
  that place;
- the writer thread *places* a snapshot (segment, offset) inside the record's transaction, from
  the decoded size computed without decoding; the bytes are decoded and written after the
  commit by edged/store/snapwriter.py, its own process, fed through a pipe right after the commit;
- the quota deletes whole segments, oldest first; retention deletes a segment once no record
  refers to it any more;
- a row whose ``image_offset`` is NULL names a file of its own (snapshots stored before
  segments), read whole.

Writes are not fsynced: after a power cut the newest snapshots may be missing, never the
records. A snapshot that cannot be written is reported back and its row forgets it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from edged.store.snapwriter import HEADER, valid_name

log = logging.getLogger(__name__)

SEGMENT_MAX_BYTES = 16 * 1024 * 1024
PREFIX = "seg-"
SUFFIX = ".jpegs"
PIPE_BYTES = 1024 * 1024  # the pipe to the writer process (Linux's default maximum)
RESPAWN_PAUSE = 5.0  # seconds without a writer process after it could not be started
IOV_MAX = 1024  # buffers per writev (Linux's limit)
STUCK_SECONDS = 10.0  # a writer process that takes no input this long is replaced

# name, offset, size, reason
Failed = Callable[[str, int, int, str], None]
# A snapshot placed in a segment: segment, offset, base64 text, decoded size.
Placed = tuple[str, int, str, int]


def segment_bytes(quota: int) -> int:
    """A segment's size limit: at most 1/16 of the quota, so pruning stays fine-grained."""
    if quota <= 0:
        return SEGMENT_MAX_BYTES
    return max(1, min(SEGMENT_MAX_BYTES, quota // 16))


def read(root: Path, name: str, offset: int | None, size: int | None) -> bytes | None:
    """A stored snapshot's JPEG, or None when it is gone (pruned, or lost in a power cut)."""
    if not valid_name(name):
        return None
    try:
        with open(root / name, "rb") as file:
            if offset is None:
                data = file.read()
            else:
                file.seek(offset)
                data = file.read(size or 0)
    except OSError:
        return None
    if (size is not None and len(data) != size) or not data.startswith(b"\xff\xd8"):
        return None
    return data


class Placer:
    """Where the next snapshot goes: the current segment and its end (writer thread only)."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.current: str | None = None
        self.end = 0
        self._number = _newest_segment(root)

    def place(self, size: int) -> tuple[str, int]:
        """The segment and offset for a snapshot of ``size`` bytes."""
        if self.current is None or (self.end and self.end + size > self.limit):
            self._number += 1
            self.current = segment_name(self._number)
            self.end = 0
        offset = self.end
        self.end += size
        return self.current, offset

    def unplace(self, offset: int, size: int) -> None:
        """Give back the newest place (its record turned out a duplicate)."""
        if offset + size == self.end:
            self.end = offset

    def retire(self, name: str) -> None:
        """The segment is being deleted: the next snapshot starts a new one."""
        if name == self.current:
            self.current = None


def segment_name(number: int) -> str:
    """``seg-000000042.jpegs``: numbered in order, so names sort oldest first (after the
    ``YYYY/MM/DD/<id>.jpg`` files of earlier versions), whatever the clock says."""
    return f"{PREFIX}{number:09d}{SUFFIX}"


def _newest_segment(root: Path) -> int:
    """The highest segment number in the folder (0: none): a new run starts after it."""
    newest = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            stem = entry.name.removeprefix(PREFIX).removesuffix(SUFFIX)
            if entry.name.startswith(PREFIX) and entry.name.endswith(SUFFIX) and stem.isdecimal():
                newest = max(newest, int(stem))
    return newest


class Writer:
    """Hands snapshots (and deletes) to the writer process, in order, through its pipe.

    The store's writer thread calls it right after a commit (after waking the waiting
    requests): one ``writev`` per commit into a 1 MiB pipe, which the process drains at its own
    pace. A full pipe makes the caller wait, which slows new commits down instead of letting
    memory grow during a replay burst; a process that takes no input for ``STUCK_SECONDS`` is
    replaced.
    """

    def __init__(self, root: Path | None, failed: Failed) -> None:
        self.root = root
        self.failed = failed
        self._lock = threading.RLock()  # one sender at a time: frames stay whole and in order
        self._marks: dict[int, threading.Event] = {}
        self._marks_lock = threading.Lock()
        self._next_mark = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._down_until = 0.0
        self._closed = root is None

    # ----- the store's side ---------------------------------------------------------------

    def write(self, snapshots: list[Placed]) -> None:
        """Hand over snapshots (segment, offset, base64 text, decoded size) to write."""
        if snapshots and not self._closed:
            self._send(
                [
                    (b"W", name, offset, size, text.encode("ascii", "replace"))
                    for name, offset, text, size in snapshots
                ]
            )

    def delete(self, names: list[str]) -> None:
        """Delete segments (after every write handed over before)."""
        if names and not self._closed:
            self._send([(b"D", name, 0, 0, b"") for name in names])

    def sync(self, timeout: float) -> bool:
        """Wait until everything handed over so far is written."""
        done = threading.Event()
        with self._lock:  # after a commit's snapshots, if one is being handed over now
            if self._closed or self._proc is None:
                return True
            with self._marks_lock:
                token = self._next_mark
                self._next_mark += 1
                self._marks[token] = done
            if not self._send([(b"M", "", token, 0, b"")]):
                self._release_marks()
        return done.wait(timeout)

    def close(self, timeout: float) -> None:
        """Let the process write what it was handed, and stop it."""
        with self._lock:
            self._closed = True
            self._stop_process(timeout)
        self._release_marks()

    def holding(self) -> threading.RLock:
        """The sender's lock, to hold across a commit's answers and its snapshots."""
        return self._lock

    @property
    def pid(self) -> int | None:
        """The writer process's id while it runs (for status and benchmarks)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # ----- sending ------------------------------------------------------------------------

    def _send(self, frames: list[tuple[bytes, str, int, int, bytes]]) -> bool:
        """Hand frames (operation, segment, offset, size, text) to the process, all in one
        system call when the pipe has room; False (writes reported failed) if it cannot run."""
        buffers: list[bytes] = []
        for op, name, offset, size, text in frames:
            encoded = name.encode()
            buffers.append(HEADER.pack(op, offset, size, len(encoded), len(text)) + encoded)
            if text:
                buffers.append(text)
        with self._lock:
            for _ in range(2):  # once more with a new process if the old one failed
                proc = self._process()
                if proc is None:
                    break
                assert proc.stdin is not None
                try:
                    _write_all(proc.stdin.fileno(), buffers, STUCK_SECONDS)
                    return True
                except OSError as exc:  # sent again in full: a write or delete twice is harmless
                    log.error("snapshots: the writer process failed (%s); starting another", exc)
                    self._stop_process(0.0)
        for op, name, offset, size, _ in frames:
            if op == b"W":
                self.failed(name, offset, size, "the snapshot writer process is not running")
        return False

    # ----- the process --------------------------------------------------------------------

    def _process(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self._stop_process(0.0)
        if self._closed or time.monotonic() < self._down_until:
            return None
        script = Path(__file__).with_name("snapwriter.py")
        command = [sys.executable or "python3", "-I", "-S", str(script), str(self.root)]
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True
            )
        except OSError as exc:
            log.error("snapshots: cannot start the writer process: %s", exc)
            self._down_until = time.monotonic() + RESPAWN_PAUSE
            return None
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(proc.stdin.fileno(), False)
        reader = threading.Thread(
            target=self._read, args=(proc.stdout,), name="edged-snapshots-in", daemon=True
        )
        reader.start()
        self._proc = proc
        return proc

    def _stop_process(self, timeout: float) -> None:
        """End the process: its input closed, it writes what it has and exits (killed if it
        has not within ``timeout``, or at once when ``timeout`` is 0)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout if timeout > 0 else 0.001)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _read(self, stdout: IO[bytes]) -> None:
        """Answers of one writer process: marks reached, snapshots that failed."""
        for raw in stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            kind, _, rest = line.partition(" ")
            if kind == "ok":
                with self._marks_lock:
                    done = self._marks.pop(int(rest), None)
                if done is not None:
                    done.set()
            elif kind == "fail":
                offset, size, name, reason = [*rest.split(" ", 3), "", "", ""][:4]
                if offset.isdecimal() and size.isdecimal():
                    self.failed(name, int(offset), int(size), reason)
        stdout.close()
        self._release_marks()  # nothing more will come from this process

    def _release_marks(self) -> None:
        with self._marks_lock:
            marks, self._marks = self._marks, {}
        for done in marks.values():
            done.set()


def _write_all(fd: int, buffers: list[bytes], timeout: float) -> None:
    """Write every buffer, in order, with as few system calls as the pipe allows; a pipe that
    takes nothing for ``timeout`` seconds raises TimeoutError (an OSError)."""
    views = [memoryview(b) for b in buffers if b]
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while views:
        try:
            written = os.writev(fd, views[:IOV_MAX])
        except BlockingIOError:
            if not poller.poll(timeout * 1000):
                raise TimeoutError(f"the pipe took nothing for {timeout:.0f} s") from None
            continue
        while written and views:
            if written >= len(views[0]):
                written -= len(views.pop(0))
            else:
                views[0] = views[0][written:]
                written = 0
