"""The simulator's push sender: one kept-alive connection, answers read in every framing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from edged.sim.push import PushConnection, PushError, target

pytestmark = pytest.mark.anyio

OK = b'{"code": 200}'
Answer = Callable[[int, bytes], bytes]  # (request number on its connection, body) -> bytes


def framed(body: bytes, extra: str = "") -> bytes:
    """An HTTP/1.1 answer with Content-Length."""
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


class Receiver:
    """A loopback HTTP/1.1 server that answers each request with ``answer`` (or hangs up)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []
        self.hang_up_after = 0  # close the connection after the n-th answer in all (0: never)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.heads.append(head)
                self.bodies.append(body)
                n += 1
                out = self.answer(n, body)
                if not out:  # hang up without an answer
                    break
                writer.write(out)
                await writer.drain()
                closing = b"connection: close" in out.lower() or out.startswith(b"HTTP/1.0")
                if closing or len(self.bodies) == self.hang_up_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiving(answer: Answer) -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(answer)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield receiver, f"http://127.0.0.1:{port}/eventRcv?x=1"
    finally:
        server.close()
        await server.wait_closed()


async def test_pushes_share_one_connection_in_order() -> None:
    async with receiving(lambda n, body: framed(OK)) as (receiver, url):
        pusher = PushConnection()
        try:
            answers = [await pusher.post(url, b"%d" % i, {"sn": "S1"}) for i in range(5)]
        finally:
            await pusher.close()
    assert answers == [(200, OK)] * 5
    assert receiver.bodies == [b"0", b"1", b"2", b"3", b"4"]
    assert (receiver.connections, pusher.connects) == (1, 1)
    head = receiver.heads[0].decode()
    assert head.startswith("POST /eventRcv?x=1 HTTP/1.1\r\n")
    assert "\r\nsn: S1\r\n" in head and "\r\ncontent-length: 1\r\n" in head


async def test_chunked_and_closing_answers_are_read() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n12345\r\n0\r\n\r\n"
    closing = framed(OK, "connection: close\r\n")
    unframed = b"HTTP/1.0 503 Busy\r\n\r\n" + OK  # the body ends with the connection

    def answer(n: int, body: bytes) -> bytes:
        return {b"a": chunked, b"b": closing, b"c": unframed}[body]

    async with receiving(answer) as (receiver, url):
        pusher = PushConnection()
        try:
            got = [await pusher.post(url, body, {}) for body in (b"a", b"a", b"b", b"c", b"a")]
        finally:
            await pusher.close()
    assert got == [(200, b"12345")] * 2 + [(200, OK), (503, OK), (200, b"12345")]
    assert receiver.connections == 3  # kept, closed by the answer, ended by the body


async def test_an_idle_connection_the_receiver_closed_is_replaced() -> None:
    async with receiving(lambda n, body: framed(OK)) as (receiver, url):
        receiver.hang_up_after = 1  # as a keep-alive timeout does, between two pushes
        pusher = PushConnection()
        try:
            got = [await pusher.post(url, body, {}) for body in (b"1", b"2", b"3")]
        finally:
            await pusher.close()
    assert got == [(200, OK)] * 3
    assert receiver.bodies == [b"1", b"2", b"3"] and pusher.connects == 2


async def test_a_receiver_that_hangs_up_mid_push_is_a_push_error() -> None:
    async with receiving(lambda n, body: b"") as (receiver, url):
        pusher = PushConnection(timeout=2.0)
        with pytest.raises(PushError):
            await pusher.post(url, b"1", {})
        await pusher.close()
    assert receiver.bodies == [b"1"]  # sent once: a fresh connection is not retried


async def test_no_receiver_is_a_push_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(PushError):
        await PushConnection(timeout=2.0).post(f"http://127.0.0.1:{port}/e", b"1", {})


def test_target_parts() -> None:
    t = target("https://[::1]:8443/a/b")
    assert (t.https, t.host, t.port, t.netloc, t.path) == (True, "::1", 8443, "[::1]:8443", "/a/b")
    assert target("http://gw/").port == 80
    with pytest.raises(ValueError):
        target("ftp://gw/")
