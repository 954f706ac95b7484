"""A fake central server over real HTTP on loopback: starlette on hypercorn in a thread.

It answers remote-auth requests (``/auth``), takes record batches (``/records``) and serves the
people document (``/people``), and misbehaves on demand: slow, hanging, erroring, flapping,
returning garbage, or down altogether (its socket closed, the port kept for a restart).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as HyperConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

# Decision behaviours: ok, slow (sleep `delay` first), http500, garbage, code500, nopass, flap
# (alternately ok and http500), huge (a grant padded to HUGE_BYTES). Forwarding behaviours: ok,
# http500, garbage, code500 (HTTP 200, body code 500), huge (an acknowledgement padded to
# HUGE_BYTES), lost (the batch is taken but the acknowledgement is an error: the sender cannot
# know it arrived). With `chunked` every body is streamed without a Content-Length.

HUGE_BYTES = 10 * 1024 * 1024
CHUNK = 64 * 1024


@dataclass
class FakeState:
    """What the fake server does and what it received."""

    auth_mode: str = "ok"
    delay: float = 0.0
    grant: bool = True
    tips: str = "Upstream says hi"
    auth_bodies: list[bytes] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)
    heartbeats: int = 0
    flap: int = 0
    forward_mode: str = "ok"
    forward_delay: float = 0.0
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    people: bytes = b"[]"
    etag: str = '"v1"'
    people_requests: list[dict[str, str]] = field(default_factory=list)
    people_status: int = 200
    chunked: bool = False


def padded(body: dict[str, Any], size: int = HUGE_BYTES) -> bytes:
    """``body`` as JSON with a ``padding`` member making it ``size`` bytes or a little more."""
    text = json.dumps(body)
    return text[:-1].encode() + b', "padding": "' + b"x" * size + b'"}'


def create_app(state: FakeState) -> Starlette:
    """The fake server's ASGI app."""

    def send(content: bytes, status: int = 200, media: str = "application/json") -> Response:
        if not state.chunked:
            return Response(content, status_code=status, media_type=media)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(content), CHUNK):
                yield content[start : start + CHUNK]

        return StreamingResponse(chunks(), status_code=status, media_type=media)

    def _json(body: Any, status: int = 200) -> Response:
        return send(json.dumps(body).encode(), status)

    async def auth(request: Request) -> Response:
        body = await request.body()
        state.auth_bodies.append(body)
        state.authorization.append(request.headers.get("authorization", ""))
        mode = state.auth_mode
        if mode == "flap":
            state.flap += 1
            mode = "ok" if state.flap % 2 else "http500"
        if state.delay:
            await asyncio.sleep(state.delay)
        if mode == "http500":
            return _json({"code": 500, "msg": "boom"}, 500)
        if mode == "garbage":
            return send(b"<html>not json", media="text/html")
        if mode == "code500":
            return _json({"code": 500, "msg": "internal", "data": None})
        if mode == "nopass":
            return _json({"code": 200, "msg": "OK", "data": {"customtips": "?"}})
        if mode == "huge":
            return send(padded({"code": 200, "msg": "OK", "data": {"pass": True}}))
        data = {
            "pass": state.grant,
            "customtips": state.tips,
            "verify_code": 2 if state.grant else 3,
        }
        return _json({"code": 200, "msg": "OK", "data": data})

    async def heartbeat(request: Request) -> Response:
        state.heartbeats += 1
        if state.auth_mode in ("http500", "flap"):
            return _json({"code": 500}, 500)
        return _json({"code": 200, "msg": "OK", "data": None})

    async def records(request: Request) -> Response:
        body = json.loads(await request.body())
        if state.forward_delay:
            await asyncio.sleep(state.forward_delay)
        if state.forward_mode == "http500":
            return _json({"code": 500}, 500)
        state.batches.append(body["records"])
        if state.forward_mode == "lost":
            return _json({"code": 503, "msg": "acknowledgement lost"}, 503)
        if state.forward_mode == "garbage":
            return send(b"ok?", media="text/plain")
        if state.forward_mode == "code500":
            return _json({"code": 500, "msg": "internal"})
        if state.forward_mode == "huge":
            return send(padded({"code": 200, "msg": "OK"}))
        return _json({"code": 200, "msg": "OK", "data": {"accepted": len(body["records"])}})

    async def people(request: Request) -> Response:
        state.people_requests.append(dict(request.headers))
        if state.people_status != 200:
            return _json({"code": state.people_status}, state.people_status)
        if request.headers.get("if-none-match") == state.etag:
            return Response(status_code=304, headers={"etag": state.etag})
        response = send(state.people)
        response.headers["etag"] = state.etag
        return response

    async def stats(request: Request) -> Response:
        keys = {r["key"] for batch in state.batches for r in batch}
        received = sum(len(batch) for batch in state.batches)
        return _json({"auth": len(state.auth_bodies), "keys": len(keys), "records": received})

    routes = [
        Route("/stats", stats, methods=["GET"]),
        Route("/auth", auth, methods=["POST"]),
        Route("/auth", heartbeat, methods=["GET"]),
        Route("/records", records, methods=["POST"]),
        Route("/people", people, methods=["GET"]),
    ]
    return Starlette(routes=routes)


class FakeUpstream:
    """The fake server in a thread; ``stop()`` and ``start()`` again keep the same port."""

    def __init__(self, pem: str | None = None) -> None:
        self.state = FakeState()
        self.port = 0
        self.pem = pem  # key and certificate chain: serve https
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.pem else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake upstream did not start")
        return self

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._stopping = asyncio.Event()
        hc = HyperConfig()
        hc.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn owns (and closes) the dup
        hc.graceful_timeout = 0.2
        if self.pem:
            hc.certfile = hc.keyfile = self.pem
        hc.accesslog = None
        hc.errorlog = None
        loop.call_soon(ready.set)
        try:
            loop.run_until_complete(
                serve(create_app(self.state), hc, shutdown_trigger=self._stopping.wait)  # type: ignore[arg-type]
            )
        finally:
            sock.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def stop(self) -> None:
        """Down: nothing listens on the port any more (connections are refused)."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        stopping = self._stopping
        self._loop.call_soon_threadsafe(stopping.set)
        self._thread.join(10)
        self._thread = None

    def records(self) -> list[dict[str, Any]]:
        """Every record received, in arrival order, duplicates included."""
        return [r for batch in self.state.batches for r in batch]

    def wait_for(self, condition: Any, timeout: float = 10.0) -> bool:
        """Poll ``condition()`` until true or the timeout (bounded)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.02)
        return bool(condition())


def main() -> None:
    """Serve the fake in its own process (for benchmarks): prints the port, runs until killed."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="fake upstream on 127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--mode", default="ok", help="auth behaviour (see FakeState)")
    parser.add_argument("--chunked", action="store_true", help="bodies without Content-Length")
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = FakeUpstream()
    server.state.delay, server.state.auth_mode = args.delay, args.mode
    server.state.chunked = args.chunked
    server.start()
    print(server.port, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()


if __name__ == "__main__":
    main()
