"""Face photos on the gateway: JPEG files under ``state_dir/faces``, named by their content.

A person's row holds the SHA-256 of its face (``people.face``), never the photo. A file is
named after its digest (``faces/ab/ab12….jpg``), so writing it twice is harmless, two people
with one photo share one file, and an import can write every new face *before* its database
transaction: a face the transaction then does not reference is removed again, and the row never
names a file that is not there. Each file is written to a temporary name, flushed to disk and
renamed (atomic on POSIX), so a power cut leaves the old state or the new one.

What is checked (``check``): not empty, at most ``MAX_BYTES``, starts with a JPEG's SOI marker
(``FF D8 FF``) and ends with its EOI marker (``FF D9``; trailing zero padding allowed). Whether a
terminal finds a usable face in it is the terminal's to say (docs/terminals.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

MAX_BYTES = 1024 * 1024  # a face photo for recognition needs far less; terminals take 10 MB
DIGEST_LENGTH = 64


def check(data: bytes) -> str | None:
    """What is wrong with a face photo, or None when it looks like a whole JPEG."""
    if not data:
        return "the photo is empty"
    if len(data) > MAX_BYTES:
        return f"the photo has {len(data)} bytes, more than the {MAX_BYTES} allowed"
    if not data.startswith(b"\xff\xd8\xff"):
        return "not a JPEG (no SOI marker at the start)"
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "not a whole JPEG (no EOI marker at the end: truncated?)"
    return None


def digest(data: bytes) -> str:
    """The name a photo is kept under: its SHA-256, hex."""
    return hashlib.sha256(data).hexdigest()


def is_digest(text: str) -> bool:
    """Whether ``text`` is a face file's name (64 lower-case hex digits)."""
    return len(text) == DIGEST_LENGTH and all(c in "0123456789abcdef" for c in text)


class FaceStore:
    """The folder of face files; the database says which are in use."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """Where the face with this digest is (or would be) kept."""
        if not is_digest(name):
            raise ValueError(f"{name!r} is not a face digest")
        return self.root / name[:2] / f"{name}.jpg"

    def has(self, name: str) -> bool:
        """Whether the face is on file."""
        return self.path(name).is_file()

    def _file(self, name: str) -> str:
        """:meth:`path` as a string: a ``Path`` interns each part of its name, and a sync that
        reads every face once would grow the interpreter's table of interned strings for good."""
        if not is_digest(name):
            raise ValueError(f"{name!r} is not a face digest")
        return os.path.join(self.root, name[:2], f"{name}.jpg")

    def size(self, name: str) -> int | None:
        """The face file's size in bytes, None when it is missing."""
        try:
            return os.stat(self._file(name)).st_size
        except OSError:
            return None

    def put(self, data: bytes) -> tuple[str, bool]:
        """Keep a checked photo; returns its digest and whether the file is new."""
        problem = check(data)
        if problem:
            raise ValueError(problem)
        name = digest(data)
        target = self.path(name)
        if target.is_file() and target.stat().st_size == len(data):
            return name, False
        self._folder(target.parent)
        fd, temp = tempfile.mkstemp(prefix=".face-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._own(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _sync_dir(target.parent)
        return name, True

    def _folder(self, folder: Path) -> None:
        """Make the face folders, owned like the state directory (``sudo edged people import``)."""
        for path in (self.root, folder):
            if not path.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                self._own(path, 0o755)

    def _own(self, path: Path | str, mode: int) -> None:
        """Readable by the daemon: root's files get the state directory's owner (the daemon's
        account); the state directory itself (0750) keeps others out."""
        os.chmod(path, mode)
        if os.geteuid() == 0:
            with contextlib.suppress(OSError):
                owner = self.root.parent.stat()
                os.chown(path, owner.st_uid, owner.st_gid)

    def read(self, name: str) -> bytes:
        """The photo's bytes (OSError when it is missing)."""
        with open(self._file(name), "rb") as file:
            return file.read()

    def open(self, name: str) -> BinaryIO:
        """The photo as a file to stream from."""
        return open(self.path(name), "rb")

    def discard(self, names: Iterable[str]) -> int:
        """Remove these faces' files (those that exist); returns how many went."""
        gone = 0
        for name in set(names):
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()
                gone += 1
        return gone

    def names(self) -> Iterator[str]:
        """Every face on file (for pruning what no person references)."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for item in sorted(sub.glob("*.jpg")):
                    if is_digest(item.stem):
                        yield item.stem

    def prune(self, keep: set[str]) -> int:
        """Remove every face file not in ``keep``; returns how many went."""
        return self.discard(name for name in list(self.names()) if name not in keep)


def _sync_dir(path: Path) -> None:
    """Make a rename durable: flush the folder's entry (best effort where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
