"""The snapshot writer process: decodes terminals' base64 JPEGs and writes them into segments.

edged runs this file as its own small process (``python3 -I -S snapwriter.py ROOT``) so that
decoding 60 KB of base64 per record never holds the daemon's GIL: the daemon hands each
snapshot over a pipe, already placed (segment file and offset, see edged/store/snapshots.py), and
moves on. Only the standard library is used here, without ``site``, to keep the process small.

Frames on stdin: a header ``<cQIHI`` (operation, offset, size, name length, text length), the
segment's name, then the text.

- ``W``: decode the text, check it is a JPEG of ``size`` bytes, write it at ``offset``;
- ``D``: delete the segment ``name`` (after every write queued before it);
- ``M``: a mark; answered ``ok <offset>`` once everything queued before it is written.

Lines on stdout: ``ok <token>`` for marks and ``fail <offset> <size> <name> <reason>`` for a
snapshot that could not be written. Writes are not fsynced: a snapshot is evidence, the record
in the database is what is durable. It runs at the lowest CPU priority: decoding is background
work that uses the CPU time the daemon leaves.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import signal
import struct
import sys
from typing import BinaryIO, TextIO

HEADER = struct.Struct("<cQIHI")
NICE = 19  # the lowest priority
OPEN_SEGMENTS = 4  # write descriptors kept open (the current segment, maybe its predecessor)


def valid_name(name: str) -> bool:
    """A segment's name stays below the images folder: relative, without ``..``."""
    return bool(name) and not name.startswith("/") and ".." not in name.split("/")


class Segments:
    """Open segment files, by name, under one root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fds: dict[str, int] = {}

    def path(self, name: str) -> str:
        """The file of a segment; names are made by edged, never taken from a terminal."""
        if not valid_name(name):
            raise OSError(f"bad segment name {name!r}")
        return os.path.join(self.root, name)

    def fd(self, name: str) -> int:
        """A write descriptor for the segment, creating it (and its folder) if needed."""
        fd = self.fds.get(name)
        if fd is None:
            path = self.path(name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
            if len(self.fds) >= OPEN_SEGMENTS:
                os.close(self.fds.pop(next(iter(self.fds))))
            self.fds[name] = fd
        return fd

    def write(self, name: str, offset: int, size: int, text: bytes) -> None:
        """Decode a snapshot and write it at its place."""
        try:
            data = binascii.a2b_base64(text)
        except (binascii.Error, ValueError) as exc:
            raise OSError(f"not base64: {exc}") from None
        if len(data) != size or not data.startswith(b"\xff\xd8"):
            raise OSError(f"snapshot decodes to {len(data)} bytes of other data, not a JPEG")
        fd = self.fd(name)
        written = os.pwrite(fd, data, offset)
        if written != size:
            raise OSError(f"short write: {written} of {size} bytes")

    def delete(self, name: str) -> None:
        """Close and remove a segment; a missing one is fine."""
        fd = self.fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))


def serve(root: str, source: BinaryIO, sink: TextIO) -> None:
    """Process frames from ``source`` until it ends."""
    segments = Segments(root)
    while True:
        header = source.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        op, offset, size, name_len, text_len = HEADER.unpack(header)
        name = source.read(name_len).decode("utf-8", "replace")
        text = source.read(text_len)
        if len(text) < text_len:
            return
        try:
            if op == b"W":
                segments.write(name, offset, size, text)
            elif op == b"D":
                segments.delete(name)
            elif op == b"M":
                sink.write(f"ok {offset}\n")
                sink.flush()
        except OSError as exc:
            if op == b"W":
                reason = str(exc).replace("\n", " ")
                sink.write(f"fail {offset} {size} {name} {reason}\n")
                sink.flush()


def main() -> None:
    """Entry point of the process: ``snapwriter.py ROOT``."""
    # edged stops this process by closing its input, once everything queued is handed over;
    # a stop signal to the whole group (systemd, Ctrl-C) must not cut that short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Background work: decoding snapshots must not take a CPU from the daemon while a person
    # waits at a door. Lowering one's own priority needs no privilege (the unit allows it).
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout)


if __name__ == "__main__":
    main()
