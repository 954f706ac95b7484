"""A real daemon: hypercorn on loopback sockets, a real SQLite file, restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sqlite3
import time
from collections.abc import Callable

import httpx
import pytest

from edged.config import Config
from edged.ops import daemon
from tests.conftest import LiveDaemon, auth_request, recognition


def test_live_push_and_admin(live: LiveDaemon) -> None:
    response = httpx.post(f"{live.url}/eventRcv", json=recognition())
    assert response.status_code == 200
    events = httpx.get(f"{live.admin_url}/api/v1/events").json()["events"]
    assert [e["kind"] for e in events] == ["recognition"]
    assert httpx.get(f"{live.admin_url}/readyz").json()["ready"] is True


def test_duplicate_after_restart_gets_same_answer(
    cfg: Config, start_live: Callable[[Config], LiveDaemon]
) -> None:
    body = auth_request(user_id="nobody")
    first = start_live(cfg)
    answer = httpx.post(f"{first.url}/auth", json=body).json()
    first.stop()
    second = start_live(cfg)
    again = httpx.post(f"{second.url}/auth", json=body).json()
    second.stop()  # the duplicate's count is written at the latest when the store closes
    assert again == answer
    conn = sqlite3.connect(cfg.storage.database_path)
    rows = conn.execute("SELECT COUNT(*), SUM(duplicates) FROM events").fetchone()
    conn.close()
    assert rows == (1, 1)


def test_bind_error_is_clear(cfg: Config, live: LiveDaemon) -> None:
    taken = f"127.0.0.1:{live.daemon.receiver_port}"
    with pytest.raises(daemon.BindError, match=r"cannot listen on 127\.0\.0\.1"):
        daemon.bind(taken)


def raw_request(port: int, head: bytes, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send bytes over a real socket and read what comes back until close or timeout."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(head + body)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"code"' in b"".join(chunks):
                break
        return b"".join(chunks)
    finally:
        sock.close()


@pytest.fixture
def tight(
    make_config: Callable[..., Config], start_live: Callable[[Config], LiveDaemon]
) -> LiveDaemon:
    """A daemon with a small body limit and a short read timeout."""
    cfg = make_config()
    receiver = dataclasses.replace(cfg.receiver, max_body_bytes=10_000, read_timeout=0.5)
    return start_live(dataclasses.replace(cfg, receiver=receiver))


def test_stalled_body_gets_408(tight: LiveDaemon) -> None:
    head = (
        b"POST /eventRcv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500\r\n\r\n"
    )
    started = time.monotonic()
    answer = raw_request(tight.daemon.receiver_port, head, b'{"type": 0, ')
    assert b" 408 " in answer.split(b"\r\n")[0]
    assert time.monotonic() - started < 3
    assert httpx.get(f"{tight.admin_url}/readyz").json()["checks"]["receiver"]["rejected"] == {
        "timeout": 1
    }


def test_streamed_oversized_body_refused_early(tight: LiveDaemon) -> None:
    head = (
        b"POST /auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"a" * 4000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4))  # 16 kB, no end
    answer = raw_request(tight.daemon.receiver_port, head, body)
    assert b" 413 " in answer.split(b"\r\n")[0]
    assert b'"pass":false' in answer


def test_declared_oversized_body_refused_before_sending(tight: LiveDaemon) -> None:
    head = (
        b"POST /eventRcv HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    answer = raw_request(tight.daemon.receiver_port, head)
    assert b" 413 " in answer.split(b"\r\n")[0]


def test_daemon_keeps_serving_after_garbage(live: LiveDaemon) -> None:
    for junk in (b"\x00\xff" * 100, b"GET / HTTP/9.9\r\n\r\n", b"POST /auth HTTP/1.1\r\n\r\n"):
        raw_request(live.daemon.receiver_port, junk, timeout=1.0)
    response = httpx.post(f"{live.url}/eventRcv", json=recognition())
    assert response.status_code == 200


def test_concurrent_burst_all_stored_once(live: LiveDaemon) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=live.url) as client:
            bodies = [recognition(uuid=f"b{i}") for i in range(100)] * 2
            responses = await asyncio.gather(*(client.post("/eventRcv", json=b) for b in bodies))
            return [r.status_code for r in responses]

    assert set(asyncio.run(burst())) == {200}
    stats = live.daemon.store.stats
    assert stats.records == 100 and stats.duplicates == 100
    assert stats.commits < 200
