"""The simulated terminal's push sender: one kept-alive HTTP/1.1 connection, one push at a time.

A terminal replays its buffer sequentially over one connection (the documented firmware
behaviour), and its client costs it next to nothing. A general-purpose client (httpx) spends
about 1.5 ms of Python on every request (this one 0.15 ms, both ends counted), which made the
simulator, not the gateway, the bound of a 50,000-record replay (docs/performance.md, "Replay
after an outage"). This one writes the request in one piece and reads the status line, the
headers and a ``Content-Length`` (or chunked) body: nothing else of HTTP is needed to talk to a
receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from edged import aio


class PushError(Exception):
    """The push could not be sent or its answer not read (the connection is closed)."""


@dataclass(frozen=True)
class Target:
    """Where a push goes: the connection's ends and the request line's path."""

    https: bool
    host: str
    port: int
    netloc: str
    path: str


def target(url: str) -> Target:
    """The parts of an ``event_dest`` URL that the sender needs; ValueError if not HTTP(S)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme == "https", parts.hostname, port, parts.netloc, path)


class PushConnection:
    """Sends POSTs to one destination at a time over a kept-alive connection."""

    def __init__(self, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.context = context
        self.connects = 0  # connections opened (a test can see that one is kept)
        self._to: Target | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST ``body`` to ``url``; returns the status and the answer's body (PushError)."""
        try:
            return await aio.within(self._post(target(url), body, headers), self.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            await self.close()
            raise PushError(str(exc) or type(exc).__name__) from None

    async def _post(self, to: Target, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = _request(to, len(body), headers) + body
        reused = self._usable(to)
        try:
            return await self._exchange(to, request)
        except (OSError, asyncio.IncompleteReadError) as exc:
            answered = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
            if not reused or answered:
                raise
            # the receiver closed the idle connection as we wrote: once more, on a new one
            await self.close()
            return await self._exchange(to, request)

    async def close(self) -> None:
        """Close the connection (the next push opens another)."""
        writer, self._reader, self._writer, self._to = self._writer, None, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # TimeoutError and ssl.SSLError are OSErrors
                await aio.within(writer.wait_closed(), 1.0)

    def _usable(self, to: Target) -> bool:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None or self._to != to:
            return False
        return not (reader.at_eof() or writer.is_closing())

    async def _exchange(self, to: Target, request: bytes) -> tuple[int, bytes]:
        if not self._usable(to):
            await self.close()
            await self._connect(to)
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        await self._writer.drain()
        status, length, chunked, keep = await _read_head(self._reader)
        body = await _read_body(self._reader, length, chunked)
        if not keep:
            await self.close()
        return status, body

    async def _connect(self, to: Target) -> None:
        context = (self.context or ssl.create_default_context()) if to.https else None
        self._reader, self._writer = await asyncio.open_connection(
            to.host, to.port, ssl=context, server_hostname=to.host if context else None
        )
        self._to = to
        self.connects += 1


def _request(to: Target, length: int, headers: dict[str, str]) -> bytes:
    lines = [f"POST {to.path} HTTP/1.1", f"host: {to.netloc}", f"content-length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length, chunked, keep-alive of an answer."""
    line = await reader.readuntil(b"\r\n")
    version, status, *_ = line.decode("latin-1").split(" ", 2)
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1 answer: {line[:40]!r}")
    length, chunked, keep = None, False, version == "HTTP/1.1"
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value
        elif name == "connection":
            keep = "close" not in value and (keep or "keep-alive" in value)
    if length is None and not chunked:
        keep = False  # the body ends with the connection
    return int(status), length, chunked, keep


async def _read_body(reader: asyncio.StreamReader, length: int | None, chunked: bool) -> bytes:
    if chunked:
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        return b"".join(parts)
    if length is None:
        return await reader.read()
    return await reader.readexactly(length)
