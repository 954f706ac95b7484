"""The baseline: a bare starlette-on-hypercorn endpoint that parses JSON and answers a constant.

Run as ``python bench/bare_app.py PORT``. Same hypercorn settings as edged's receiver (no access
log, no server header), so the difference to edged is edged's own work: checks, normalising,
deciding, the durable commit.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = json.dumps(
    {"code": 200, "msg": "OK", "message": "OK", "data": {"pass": True, "customtips": "Welcome"}},
    separators=(",", ":"),
).encode()


async def endpoint(request: Request) -> Response:
    """Parse the body as JSON and return a constant."""
    json.loads(await request.body())
    return Response(ANSWER, media_type="application/json")


def create_app() -> Starlette:
    """The bare app, on the same paths edged serves."""
    routes = [Route(p, endpoint, methods=["POST"]) for p in ("/eventRcv", "/auth")]
    return Starlette(routes=routes)


async def main(port: int) -> None:
    """Serve on 127.0.0.1:PORT until SIGTERM or SIGINT."""
    hc = Config()
    hc.bind = [f"127.0.0.1:{port}"]
    hc.accesslog = None
    hc.include_server_header = False
    hc.keep_alive_timeout = 75.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(create_app(), hc, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
