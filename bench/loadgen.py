"""A light load generator: N keep-alive connections, hand-written HTTP/1.1 on asyncio streams.

Run by bench/receiver.py in a process of its own (so its CPU shows apart from the servers'):
``python bench/loadgen.py '<json options>'``. Prints one JSON object: per-request latencies of
the measured phase, status counts, granted answers, and the generator's own CPU time, so the
report can show the generator is not the bottleneck.

Every request is unique: pushes carry a fresh uuid, remote-auth requests a unique score (the
receiver's content hash then differs), and every timestamp is the current time, so edged stores
each one as a live record rather than a duplicate or a replay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

IMAGE_BYTES = 45_000  # 60,000 base64 characters, the size the benchmark targets


def fake_jpeg(size: int = IMAGE_BYTES) -> str:
    """JPEG-framed random bytes (SOI ... EOI) as base64: incompressible, like a real snapshot."""
    return base64.b64encode(b"\xff\xd8\xff\xe0" + os.urandom(size - 6) + b"\xff\xd9").decode()


def _template(body: dict[str, Any], markers: list[str]) -> list[bytes]:
    """The body's JSON split around string markers, for cheap per-request substitution."""
    text = json.dumps(body, separators=(",", ":"))
    pieces: list[bytes] = []
    for marker in markers:
        head, _, text = text.partition(f'"{marker}"')
        pieces.append(head.encode())
    pieces.append(text.encode())
    return pieces


def auth_template(serial: str, user_id: str) -> list[bytes]:
    """A flat remote-auth request of about 1 KB; markers: score, timestamp."""
    body = {
        "deviceSN": serial,
        "recognizeStatus": 4,
        "recognizeScore": "@SCORE@",
        "entry_mode": 1,
        "mask": 1,
        "rgb_image": "",
        "bodyTemperature": 36.4,
        "timestamp": "@TS@",
        "qrcode_content": "",
        "user": {
            "name": "Ann Example",
            "user_id": user_id,
            "type": 1,
            "ic_number": "3344556677",
            "job_number": "J-000123",
            "id_number": "",
            "pin": "",
            "guest_time_start": None,
            "guest_time_end": None,
            "remark": "benchmark person; " + "x" * 560,
            "groups": [{"id": i, "name": f"group-{i}"} for i in range(1, 6)],
        },
    }
    return _template(body, ["@SCORE@", "@TS@"])


def push_template(serial: str, user_id: str) -> list[bytes]:
    """A type 0 recognition push with a 60 KB base64 snapshot; markers: uuid, timestamp, image."""
    data = {
        "deviceSN": serial,
        "uuid": "@UUID@",
        "recognitionType": 1,
        "recognizeScore": 0.97,
        "mask": 1,
        "mode": 0,
        "entry_mode": 1,
        "abnormal_type": 0,
        "pass": True,
        "timestamp": "@TS@",
        "bodyTemperature": 36.5,
        "rgb_image": "@IMAGE@",
        "user": {"name": "Ann Example", "user_id": user_id, "type": 1, "groups": []},
    }
    return _template({"type": 0, "data": data}, ["@UUID@", "@TS@", "@IMAGE@"])


@dataclass
class Options:
    """What to send, where, how much."""

    host: str
    port: int
    path: str
    workload: str  # "auth" or "push"
    requests: int
    warmup: int
    duration: float
    concurrency: int
    serial: str
    user_id: str
    tag: int  # makes bodies unique across runs against the same server


@dataclass
class Phase:
    """The shared request counter and the results of one phase."""

    total: int
    deadline: float
    latencies: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    granted: int = 0
    issued: int = 0

    def take(self) -> int | None:
        if self.issued >= self.total or time.monotonic() > self.deadline:
            return None
        self.issued += 1
        return self.issued


class Client:
    """One keep-alive connection."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.head = (
            f"POST {opts.path} HTTP/1.1\r\nHost: {opts.host}:{opts.port}\r\n"
            f"Content-Type: application/json\r\nsn: {opts.serial}\r\nContent-Length: "
        ).encode()

    async def request(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.opts.host, self.opts.port)
        assert self.reader is not None
        self.writer.write(b"".join((self.head, str(len(body)).encode(), b"\r\n\r\n", body)))
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = -1, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if length < 0:
            raise RuntimeError("response without Content-Length")
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Bodies:
    """Unique request bodies for one workload."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        if opts.workload == "auth":
            self.pieces = auth_template(opts.serial, opts.user_id)
        else:
            self.pieces = push_template(opts.serial, opts.user_id)
            self.image = fake_jpeg().encode()
        self.seq = 0

    def next(self) -> bytes:
        self.seq += 1
        p = self.pieces
        ts = str(int(time.time())).encode()
        if self.opts.workload == "auth":
            # a distinct float per request (exact in JSON): a new content hash, a new record
            score = repr(0.5 + (self.opts.tag * 10_000_000 + self.seq) * 1e-9).encode()
            return b"".join((p[0], score, p[1], ts, p[2]))
        uuid = f'"bench-{self.opts.tag}-{self.seq}-{os.getpid()}"'.encode()
        return b"".join((p[0], uuid, p[1], ts, p[2], b'"', self.image, b'"', p[3]))


async def _worker(client: Client, bodies: Bodies, phase: Phase, auth: bool) -> None:
    while phase.take() is not None:
        body = bodies.next()
        start = time.perf_counter_ns()
        status, payload = await client.request(body)
        phase.latencies.append((time.perf_counter_ns() - start) // 1000)
        phase.statuses[status] = phase.statuses.get(status, 0) + 1
        if auth and b'"pass":true' in payload:
            phase.granted += 1


async def _phase(clients: list[Client], bodies: Bodies, total: int, duration: float) -> Phase:
    phase = Phase(total, time.monotonic() + duration)
    auth = bodies.opts.workload == "auth"
    await asyncio.gather(*(_worker(c, bodies, phase, auth) for c in clients))
    return phase


async def run(opts: Options) -> dict[str, Any]:
    """Warm up, then measure; returns the figures as plain values."""
    bodies = Bodies(opts)
    clients = [Client(opts) for _ in range(opts.concurrency)]
    await _phase(clients, bodies, opts.warmup, opts.duration)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    phase = await _phase(clients, bodies, opts.requests, opts.duration)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    for client in clients:
        client.close()
    return {
        "latencies_us": phase.latencies,
        "statuses": {str(k): v for k, v in phase.statuses.items()},
        "granted": phase.granted,
        "wall_s": wall,
        "cpu_s": cpu,
        "body_bytes": len(bodies.next()),
    }


def main() -> None:
    """Entry point: options as one JSON argument, results as JSON on stdout."""
    opts = Options(**json.loads(sys.argv[1]))
    json.dump(asyncio.run(run(opts)), sys.stdout)


if __name__ == "__main__":
    main()
