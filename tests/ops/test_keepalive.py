"""Connections on a real socket: kept-alive across idle waits, request heads under a deadline.

The real timeouts (a 10 s read timeout, a 30 s heartbeat, a 75 s keep-alive) are scaled down:
read and head timeouts of 0.5 s, idle waits of 0.6, 1.5 and 3 s on one connection.
"""

from __future__ import annotations

import dataclasses
import json
import select
import socket
import time
from collections.abc import Callable

import pytest

from edged.config import Config
from tests.conftest import SERIAL, LiveDaemon, recognition

SHORT = 0.5  # read_timeout and header_timeout in these tests
BOUND = 20.0  # no test loop runs longer than this


@pytest.fixture
def quick(
    make_config: Callable[..., Config], start_live: Callable[[Config], LiveDaemon]
) -> LiveDaemon:
    """A daemon whose read and head timeouts are 0.5 s."""
    cfg = make_config()
    receiver = dataclasses.replace(cfg.receiver, read_timeout=SHORT, header_timeout=SHORT)
    return start_live(dataclasses.replace(cfg, receiver=receiver))


def push_request(uuid: str) -> bytes:
    """One kept-alive HTTP/1.1 push of a unique recognition record."""
    body = json.dumps(recognition(uuid=uuid)).encode()
    head = (
        b"POST /eventRcv HTTP/1.1\r\nHost: edged\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head + body


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length framed); raises if the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        body += chunk
    return int(lines[0].split()[1]), body


def idle(seconds: float, sock: socket.socket) -> None:
    """Wait ``seconds`` on an idle connection; fail at once if the daemon closes it."""
    readable, _, _ = select.select([sock], [], [], seconds)
    assert not readable, "the daemon closed (or wrote to) an idle kept-alive connection"


def test_kept_alive_connection_served_after_idle_waits(quick: LiveDaemon) -> None:
    sock = socket.create_connection(("127.0.0.1", quick.daemon.receiver_port), timeout=5.0)
    with sock:
        sock.sendall(push_request("ka-0"))
        assert read_response(sock)[0] == 200
        for n, wait in enumerate((0.6, 1.5, 3.0), start=1):
            idle(wait, sock)
            sock.sendall(push_request(f"ka-{n}"))
            status, body = read_response(sock)
            assert (status, json.loads(body)["code"]) == (200, 200), f"after {wait} s idle"
    rows = quick.daemon.store.db.conn.execute(
        "SELECT uuid FROM events WHERE serial = ? ORDER BY id", (SERIAL,)
    ).fetchall()
    assert [r[0] for r in rows] == ["ka-0", "ka-1", "ka-2", "ka-3"]


def trickle(sockets: list[socket.socket], head: bytes, deadline: float) -> dict[int, bytes]:
    """Send ``head`` a byte every 0.1 s on each socket until each is closed or ``deadline``."""
    answers: dict[int, bytes] = {}
    sent = 0
    while len(answers) < len(sockets) and time.monotonic() < deadline:
        open_ = [s for s in sockets if s.fileno() not in answers]
        readable, _, _ = select.select(open_, [], [], 0.1)
        for sock in readable:
            answers[sock.fileno()] = _drain(sock)
        byte = head[sent % len(head) : sent % len(head) + 1]
        for sock in open_:
            if sock not in readable:
                try:
                    sock.send(byte)
                except OSError:
                    answers[sock.fileno()] = b""
        sent += 1
    return answers


def _drain(sock: socket.socket) -> bytes:
    """What the daemon sent before it closed the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("listener", ["receiver", "admin"])
def test_trickled_request_heads_are_cut(quick: LiveDaemon, listener: str) -> None:
    port = quick.daemon.receiver_port if listener == "receiver" else quick.daemon.admin_port
    head = b"POST /eventRcv HTTP/1.1\r\nHost: edged\r\n" + b"X-Pad: " + b"a" * 4000
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5.0) for _ in range(4)]
    started = time.monotonic()
    try:
        answers = trickle(sockets, head, started + BOUND)
    finally:
        for sock in sockets:
            sock.close()
    assert len(answers) == len(sockets), f"still open after {BOUND} s of trickling"
    for answer in answers.values():
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"code":408' in answer
    # a served head resets the deadline: the daemon still answers a prompt client
    sock = socket.create_connection(("127.0.0.1", quick.daemon.receiver_port), timeout=5.0)
    with sock:
        sock.sendall(push_request("after-trickle"))
        assert read_response(sock)[0] == 200


def test_silent_connection_is_closed(quick: LiveDaemon) -> None:
    sock = socket.create_connection(("127.0.0.1", quick.daemon.receiver_port), timeout=BOUND)
    with sock:
        readable, _, _ = select.select([sock], [], [], BOUND)
        assert readable, f"a connection that sent nothing was still open after {BOUND} s"
        assert _drain(sock).startswith(b"HTTP/1.1 408 ")


def test_head_deadline_counts_from_first_byte_after_idle(quick: LiveDaemon) -> None:
    sock = socket.create_connection(("127.0.0.1", quick.daemon.receiver_port), timeout=5.0)
    with sock:
        sock.sendall(push_request("first"))
        assert read_response(sock)[0] == 200
        idle(3 * SHORT, sock)  # longer than the head deadline: the idle wait is not head time
        request = push_request("second")
        sock.sendall(request[:10])  # a head begun slowly, finished well inside the deadline
        time.sleep(SHORT / 5)
        sock.sendall(request[10:])
        assert read_response(sock)[0] == 200


def get_request(path: str) -> bytes:
    """One kept-alive HTTP/1.1 GET, as a browser or http.client sends it."""
    return b"GET %s HTTP/1.1\r\nHost: edged\r\nAccept-Encoding: identity\r\n\r\n" % path.encode()


def test_kept_alive_admin_connection_serves_request_after_request(quick: LiveDaemon) -> None:
    """Answers that never read the (empty) body keep the connection: hypercorn 0.13 closed it."""
    sock = socket.create_connection(("127.0.0.1", quick.daemon.admin_port), timeout=5.0)
    with sock:
        for n, wait in enumerate((0.0, 0.3, 0.6, 0.0)):
            if wait:
                idle(wait, sock)
            sock.sendall(get_request("/healthz"))
            assert read_response(sock)[0] == 200, f"request {n} after {wait} s idle"
            sock.sendall(get_request("/api/v1/events?limit=1"))
            assert read_response(sock)[0] == 200, f"request {n}b"
