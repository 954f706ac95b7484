"""Benchmark the web page's cost to the doors: remote-auth with 5 live streams open vs none.

``.venv/bin/python bench/webstreams.py [--json FILE]`` starts, in one run, one real edged
(``python -m edged run``, [web] enabled, one account) on loopback whose database already holds
``--events`` stored events (100,000 by default, written before it starts), then:

- renders the overview (``GET /ui/``, logged in) ``--renders`` times: its time with that many
  events stored;
- drives remote-auth requests (bench/loadgen.py in its own process, as bench/receiver.py does)
  in alternating runs: no stream open, then 5 server-sent-event streams open (``/ui/stream``,
  each read by a thread of this process like a browser would), and again, ``--rounds`` times,
  so machine noise falls on both; prints p50/p99 of each and the ratio streams/none;
- reads the daemon's resident memory with no stream and with 5 streams open after the load.

Figures, not a pass/fail test; the issue's targets are shown as met or not met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from receiver import (  # bench/receiver.py: the same load generator and helpers
    CONFIG as RECEIVER_CONFIG,
)
from receiver import (
    SERIAL,
    USER_ID,
    Series,
    cpu_seconds,
    drive,
    free_port,
    percentile,
    status_kb,
    stop,
    wait_listening,
)

STREAMS = 5
TARGET_RENDER_MS = 300.0
TARGET_EXTRA_MB = 10.0
PASSWORD = "bench-password"

# bench/receiver.py's configuration with the web page on (before the terminals' tables)
CONFIG = RECEIVER_CONFIG.replace("[[terminals]]", "[web]\nenabled = true\n\n[[terminals]]", 1)


def prefill(db: Path, count: int) -> None:
    """Store ``count`` recognition records through edged's own store, before the daemon runs."""
    from edged.receive.normalize import normalize
    from edged.store import events as store

    start = time.time() - count  # one a second, up to now
    names = [("e-1", "Ann Example"), ("e-2", "Bob Example"), ("e-3", "Cem Example")]

    def records() -> Any:
        for i in range(count):
            user_id, name = names[i % 3]
            push = {
                "type": 0,
                "data": {
                    "deviceSN": SERIAL,
                    "uuid": f"fill-{i}",
                    "recognitionType": 1,
                    "recognizeScore": 0.97,
                    "pass": True,
                    "timestamp": int(start + i),
                    "rgb_image": "",
                    "user": {"name": name, "user_id": user_id, "type": 1},
                },
            }
            yield store.Record(normalize(push), start + i, None, "bench-door", {"code": 200})

    st = store.Store(db)
    try:
        asyncio.run(st.save_bulk(records()))
    finally:
        st.close()


def start(tmp: Path, events: int) -> tuple[subprocess.Popen[bytes], int, int]:
    port, admin_port = free_port(), free_port()
    cfg = tmp / "edged.toml"
    state = tmp / "state"
    cfg.write_text(CONFIG.format(port=port, admin_port=admin_port, state=state, serial=SERIAL))
    edged = [sys.executable, "-m", "edged"]
    people = tmp / "people.json"
    people.write_text(
        json.dumps(
            {
                "people": [
                    {"id": "p-1", "name": "Ann Example", "user_id": USER_ID, "groups": "staff"}
                ],
                "permissions": [{"group": "staff", "door": "bench-door"}],
            }
        )
    )
    subprocess.run(
        [*edged, "people", "import", str(people), "-c", str(cfg)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [*edged, "web", "passwd", "bench", "--password-stdin", "-c", str(cfg)],
        input=f"{PASSWORD}\n".encode(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    began = time.monotonic()
    prefill(state / "edged.db", events)
    print(f"  {events} events stored in {time.monotonic() - began:.0f} s", file=sys.stderr)
    log = tmp / "edged.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([*edged, "run", "-c", str(cfg)], stderr=err)
    wait_listening(port, proc, "edged", log)
    wait_listening(admin_port, proc, "edged admin", log)
    return proc, port, admin_port


class Streams:
    """``count`` logged-in SSE readers, each on a thread, counting the records pushed."""

    def __init__(self, base: str, cookies: httpx.Cookies, count: int) -> None:
        self.records = [0] * count
        self.replies: list[httpx.Response] = []
        self.stopping = threading.Event()
        self.opened = threading.Barrier(count + 1, timeout=30)
        self.threads = [
            threading.Thread(target=self._read, args=(base, cookies, i), daemon=True)
            for i in range(count)
        ]
        for thread in self.threads:
            thread.start()
        self.opened.wait()

    def _read(self, base: str, cookies: httpx.Cookies, index: int) -> None:
        client = httpx.Client(base_url=base, cookies=cookies, timeout=30)
        with client, client.stream("GET", "/ui/stream") as reply:
            self.replies.append(reply)
            self.opened.wait()
            mark, carry = b"event: record", b""
            try:  # counted on raw bytes: a reader as light as it can be on this machine
                for chunk in reply.iter_raw():
                    data = carry + chunk
                    self.records[index] += data.count(mark)
                    carry = data[-(len(mark) - 1) :]
                    if mark in carry:
                        carry = b""
            except (httpx.HTTPError, RuntimeError, ValueError):
                if not self.stopping.is_set():
                    raise

    def close(self) -> None:
        """Close every stream (the server sees the browsers go) and wait for the readers."""
        self.stopping.set()
        for reply in self.replies:
            with contextlib.suppress(Exception):
                reply.close()
        for thread in self.threads:
            thread.join(20)


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    proc, port, admin_port = start(tmp, args.events)
    base = f"http://127.0.0.1:{admin_port}"
    try:
        session = httpx.Client(base_url=base, timeout=30)
        reply = session.post("/ui/login", data={"name": "bench", "password": PASSWORD})
        if reply.status_code != 303:
            raise SystemExit(f"login failed: {reply.status_code} {reply.text[:200]}")
        renders = []
        for _ in range(args.renders):
            began = time.perf_counter()
            page = session.get("/ui/")
            renders.append((time.perf_counter() - began) * 1000)
            assert page.status_code == 200, page.status_code
        renders.sort()
        rss_none = status_kb(proc.pid, ("VmRSS",)).get("VmRSS", 0)
        series = {"none": Series(), "streams": Series()}
        pushed: list[int] = []
        rss_streams = 0
        tag = 0
        for rnd in range(args.rounds):
            for mode in ("none", "streams"):
                readers = Streams(base, session.cookies, STREAMS) if mode == "streams" else None
                tag += 1
                cpu = cpu_seconds(proc.pid)
                run = drive(port, "auth", args, tag)
                run["server_cpu_s"] = cpu_seconds(proc.pid) - cpu
                run["sent"] = args.requests + args.warmup
                series[mode].add(run)
                if readers is not None:
                    time.sleep(1.5)  # the last records reach the readers
                    rss_streams = max(rss_streams, status_kb(proc.pid, ("VmRSS",))["VmRSS"])
                    pushed.append(min(readers.records))
                    readers.close()
                print(
                    f"  round {rnd + 1} {mode:7}: {series[mode].rounds[-1]['p99_ms']:6.2f} ms p99",
                    file=sys.stderr,
                )
        rss_after = status_kb(proc.pid, ("VmRSS",)).get("VmRSS", 0)
    finally:
        stop(proc)
    none, streams = series["none"].summary(), series["streams"].summary()
    return {
        "events": args.events,
        "render_ms": {
            "p50": percentile([round(r * 1000) for r in renders], 50) / 1000,
            "max": renders[-1],
            "count": len(renders),
        },
        "auth": {"none": none, "streams": streams},
        "p99_ratio": streams["p99_ms"] / none["p99_ms"] if none["p99_ms"] else None,
        "records_per_stream": pushed,
        "requests_per_round": args.requests,
        "rss_kb": {"no_stream": rss_none, "five_streams": rss_streams, "after": rss_after},
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }


def report(data: dict[str, Any]) -> str:
    auth = data["auth"]
    render = data["render_ms"]
    extra_mb = (data["rss_kb"]["five_streams"] - data["rss_kb"]["no_stream"]) / 1024
    lines = [
        f"overview render with {data['events']:,} events stored: p50 {render['p50']:.1f} ms, "
        f"max {render['max']:.1f} ms over {render['count']} renders "
        f"(target <= {TARGET_RENDER_MS:.0f} ms: "
        f"{'met' if render['max'] <= TARGET_RENDER_MS else 'NOT met'})",
        f"remote-auth, no stream:   p50 {auth['none']['p50_ms']:.2f} ms, "
        f"p99 {auth['none']['p99_ms']:.2f} ms, {auth['none']['rps']:.0f} req/s",
        f"remote-auth, {STREAMS} streams:  p50 {auth['streams']['p50_ms']:.2f} ms, "
        f"p99 {auth['streams']['p99_ms']:.2f} ms, {auth['streams']['rps']:.0f} req/s",
        f"p99 ratio streams/none: {data['p99_ratio']:.2f}; per-round p99 none "
        + ", ".join(f"{r['p99_ms']:.2f}" for r in auth["none"]["rounds"])
        + " / streams "
        + ", ".join(f"{r['p99_ms']:.2f}" for r in auth["streams"]["rounds"]),
        f"records each stream received per round (fewest): {data['records_per_stream']} "
        f"of {data['requests_per_round']} measured (+ warm-up)",
        f"daemon RSS: {data['rss_kb']['no_stream'] / 1024:.1f} MiB with no stream, "
        f"{data['rss_kb']['five_streams'] / 1024:.1f} MiB with {STREAMS} open "
        f"(+{extra_mb:.1f} MiB; target <= +{TARGET_EXTRA_MB:.0f} MiB: "
        f"{'met' if extra_mb <= TARGET_EXTRA_MB else 'NOT met'})",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    assert __doc__
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events stored before the start")
    p.add_argument("--renders", type=int, default=20, help="overview renders timed")
    p.add_argument("--requests", type=int, default=3000, help="measured requests per run")
    p.add_argument("--warmup", type=int, default=300, help="warm-up requests per run")
    p.add_argument("--rounds", type=int, default=2, help="alternations of none and streams")
    p.add_argument("--duration", type=float, default=60.0, help="time bound per run, seconds")
    p.add_argument("--concurrency", type=int, default=8, help="keep-alive client connections")
    p.add_argument("--json", metavar="FILE", help="also write all figures as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edged-webbench-") as tmp:
        data = measure(args, Path(tmp))
    print(report(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
