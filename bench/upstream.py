"""Benchmark: remote-auth latency with an upstream, and forwarding throughput of a backlog.

Runs a real daemon (hypercorn on loopback) and a fake upstream (starlette on hypercorn, in a
thread) and measures, in one run:

- remote-auth p50/p99 with no upstream (the baseline), with the upstream healthy (answering in
  20 ms), down with the breaker open (target: within 10% of the baseline), and hanging with the
  breaker kept closed (target: deadline + 5 ms at most);
- how fast a 50,000-record outbox drains to a healthy upstream;
- bounds (first; ``--bounds`` runs only these), against a daemon process of its own: its VmRSS
  while an upstream answers 130 requests with 10 MB grants (with and without Content-Length),
  and the client-side time of fallback answers against the deadline (percentiles), one and
  eight at a time.

Every loop is bounded. Usage: ``.venv/bin/python bench/upstream.py [--quick] [--bounds]``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench import receiver as rbench  # noqa: E402
from edged import config  # noqa: E402
from edged.store import events as store  # noqa: E402
from edged.upstream import client as upstream  # noqa: E402
from edged.upstream import outbox  # noqa: E402
from tests.conftest import (  # noqa: E402
    BASE_TOML,
    SERIAL,
    SERIAL_OLD,
    LiveDaemon,
    auth_request,
    recognition,
)

DEADLINE = 0.5


def make_config(state: Path, extra: str = "") -> config.Config:
    text = BASE_TOML.format(state=state, serial=SERIAL, serial_old=SERIAL_OLD)
    return config.parse(text + '\n[logging]\nlevel = "error"\n' + extra, "bench.toml")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def body(i: int) -> bytes:
    # a unique request each time (the score is part of the duplicate key), same person
    return json.dumps(auth_request(recognizeScore=0.9 + i * 1e-7)).encode()


def measure(live: LiveDaemon, count: int, concurrency: int = 1, pause: float = 0.0) -> list[float]:
    """Latencies (ms) of ``count`` remote-auth requests, ``concurrency`` at a time."""
    url = f"{live.url}/auth"
    headers = {"content-type": "application/json"}
    clients = [httpx.Client() for _ in range(concurrency)]

    def one(i: int) -> float:
        client = clients[i % concurrency]
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        response = client.post(url, content=body(i), headers=headers)
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status_code == 200, response.text
        return elapsed

    for i in range(3 if pause else 20):  # warm-up: connections, caches (opens a breaker)
        one(10_000_000 + i)
    try:
        if concurrency == 1:
            return [one(i) for i in range(count)]
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()


def scenario(name: str, state: Path, extra: str, count: int, pause: float = 0.0) -> list[float]:
    live = LiveDaemon(make_config(state, extra))
    try:
        return measure(live, count, pause=pause)
    finally:
        live.stop()


def upstream_toml(url: str, failures: int = 3, probe: float = 5.0) -> str:
    return (
        f'\n[upstream]\nurl = "{url}/auth"\ndeadline = {DEADLINE}\n'
        f"breaker_failures = {failures}\nprobe_interval = {probe}\n"
    )


class FakeProcess:
    """The fake upstream in its own process, so that it does not compete for our GIL."""

    def __init__(self, delay: float = 0.0, *options: str) -> None:
        command = [sys.executable, "-m", "tests.fakeupstream", "--delay", str(delay), *options]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = httpx.get(f"{self.url}/stats", timeout=30).json()
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def latency(tmp: Path, quick: bool) -> dict[str, list[float]]:
    n = 300 if quick else 2000
    results: dict[str, list[float]] = {"none": [], "down": []}
    # no upstream vs down-with-breaker-open, alternated so that drift hits both alike
    for round_ in range(8):
        results["none"] += scenario("none", tmp / f"none{round_}", "", n // 8)
        extra = upstream_toml(closed_port_url(), failures=1, probe=3600.0)  # opens on warm-up
        results["down"] += scenario("down", tmp / f"down{round_}", extra, n // 8)
    # what a request costs after the daemon sat idle as long as the deadline (cold caches, VM
    # wake-ups): the fair baseline for the hanging case, where edged waits that long first
    results["idle"] = scenario("idle", tmp / "idle", "", 20 if quick else 200, pause=DEADLINE)
    for key, delay, failures, count in (
        ("healthy", 0.020, 3, 200 if quick else 500),
        ("hanging", 3600.0, 10**9, 20 if quick else 200),  # a breaker that never opens
    ):
        fake = FakeProcess(delay)
        try:
            extra = upstream_toml(fake.url, failures)
            results[key] = scenario(key, tmp / key, extra, count, pause=0.0)
        finally:
            fake.stop()
    return results


def fill_backlog(path: Path, count: int) -> None:
    """A realistic backlog: recognition records as the receiver stores them."""
    store.open_database(path).conn.close()
    conn = sqlite3.connect(path)
    raw = json.dumps(recognition(uuid="x", rgb_image="<48213 bytes>"))
    rows = [
        (f"{SERIAL}:u-{i}", "recognition", 0, SERIAL, "lobby", f"u-{i}", 1.7e9 + i, 1.7e9 + i, raw)
        for i in range(count)
    ]
    conn.executemany(
        "INSERT INTO events (dedup_key, kind, push_type, serial, terminal, uuid, occurred_at, "
        "received_at, raw, response) VALUES (?,?,?,?,?,?,?,?,?,'{\"code\":200}')",
        rows,
    )
    conn.commit()
    conn.close()


async def drain(cfg: config.Config, st: store.Store, count: int, limit: float) -> float:
    client = upstream.make_client(cfg, cfg.upstream.forward_timeout, 2)
    forwarder = outbox.Forwarder(cfg, st, client)
    task = asyncio.create_task(forwarder.run())
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < limit:
            if outbox.cursor(st.db.conn) >= count:
                break
            await asyncio.sleep(0.05)
        return time.perf_counter() - start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await forwarder.aclose()


def throughput(tmp: Path, quick: bool, batch: int) -> dict[str, Any]:
    count = 5000 if quick else 50_000
    fake = FakeProcess()
    state = tmp / f"backlog{batch}"
    cfg = make_config(
        state, f'\n[upstream]\nforward_url = "{fake.url}/records"\nforward_batch_size = {batch}\n'
    )
    fill_backlog(cfg.storage.database_path, count)
    st = store.Store(cfg.storage.database_path, None)
    try:
        seconds = asyncio.run(drain(cfg, st, count, limit=300.0))
        done = outbox.cursor(st.db.conn)
        received = fake.stats()["keys"]
    finally:
        st.close()
        fake.stop()
    return {"records": count, "forwarded": done, "received": received, "seconds": seconds}


# ----- bounds: a daemon process of its own, measured from outside --------------------------


@contextlib.contextmanager
def daemon_process(tmp: Path, extra: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m edged run`` with bench/receiver.py's configuration plus ``extra``."""
    port, admin_port = rbench.free_port(), rbench.free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "edged.toml"
    base = rbench.CONFIG.format(
        port=port, admin_port=admin_port, state=tmp / "state", serial=rbench.SERIAL
    )
    cfg.write_text(base + extra)
    log = tmp / "edged.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "-c", str(cfg)], stderr=err)
    try:
        rbench.wait_listening(port, proc, "edged", log)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        rbench.stop(proc)


def auth_body(i: int) -> bytes:
    """A unique remote-auth request for someone the cache does not know (it would deny)."""
    fields = auth_request(serial=rbench.SERIAL, user_id="nobody", recognizeScore=0.5 + i * 1e-7)
    return json.dumps(fields).encode()


def post_all(url: str, count: int, concurrency: int) -> list[tuple[float, bool]]:
    """``count`` requests, ``concurrency`` at a time: (client-side seconds, granted) each."""
    headers = {"content-type": "application/json"}

    def one(i: int) -> tuple[float, bool]:
        with httpx.Client(timeout=30) as client:  # a connection each: terminals do not share
            start = time.perf_counter()
            response = client.post(f"{url}/auth", content=auth_body(i), headers=headers)
            elapsed = time.perf_counter() - start
        return elapsed, bool(response.json()["data"]["pass"])

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def oversized(tmp: Path, count: int, chunked: bool) -> dict[str, Any]:
    """RSS of a daemon asked ``count`` times by an upstream answering 10 MB grants."""
    fake = FakeProcess(0.0, "--mode", "huge", *(["--chunked"] if chunked else []))
    extra = upstream_toml(fake.url, failures=10**9)  # never opens: every answer is read
    try:
        with daemon_process(tmp, extra) as (proc, url):
            post_all(url, 5, 1)  # warm-up: connections, imports
            start = rbench.status_kb(proc.pid, ("VmRSS",))["VmRSS"]
            results = post_all(url, count, 1)
            end = rbench.status_kb(proc.pid, ("VmRSS", "VmHWM"))
    finally:
        fake.stop()
    return {
        "start_kb": start,
        "end_kb": end["VmRSS"],
        "peak_kb": end["VmHWM"],
        "granted": sum(granted for _, granted in results),
        "count": count,
    }


def deadline_at_client(tmp: Path, count: int, concurrency: int) -> list[float]:
    """Client-side ms over the deadline of fallback answers, upstream hanging, breaker closed."""
    fake = FakeProcess(3600.0)
    try:
        with daemon_process(tmp, upstream_toml(fake.url, failures=10**9)) as (_, url):
            post_all(url, 2 * concurrency, concurrency)  # warm-up
            results = post_all(url, count, concurrency)
    finally:
        fake.stop()
    return [(elapsed - DEADLINE) * 1000 for elapsed, _ in results]


def bounds(tmp: Path, quick: bool) -> None:
    """Print the oversized-answer memory figures and the deadline as the client sees it."""
    for chunked in (False, True):
        out = oversized(tmp / f"huge{int(chunked)}", 30 if quick else 130, chunked)
        how = "streamed, no Content-Length" if chunked else "with Content-Length"
        print(
            f"{out['count']} answers of 10 MB ({how}): VmRSS {out['start_kb'] / 1024:.1f} -> "
            f"{out['end_kb'] / 1024:.1f} MiB (peak {out['peak_kb'] / 1024:.1f} MiB), "
            f"granted {out['granted']}"
        )
    for concurrency in (1, 8):
        over = deadline_at_client(tmp / f"late{concurrency}", 40 if quick else 200, concurrency)
        shown = ", ".join(f"p{q} {percentile(over, q):+.1f}" for q in (1, 50, 90, 99))
        late = sum(v > 0 for v in over) / len(over)
        print(
            f"hanging upstream, {concurrency} at a time, client-side ms over the "
            f"{DEADLINE * 1000:.0f} ms deadline: {shown}, max {max(over):+.1f}; "
            f"after the deadline {late:.0%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and records")
    parser.add_argument(
        "--tmpfs", action="store_true", help="state in /dev/shm: no fsync cost, software only"
    )
    parser.add_argument(
        "--bounds", action="store_true", help="only: oversized answers, deadline at the client"
    )
    args = parser.parse_args()
    where = "/dev/shm" if args.tmpfs else None
    print(
        f"state on {'tmpfs (/dev/shm)' if args.tmpfs else 'disk (' + tempfile.gettempdir() + ')'}"
    )
    with tempfile.TemporaryDirectory(prefix="edged-bench-", dir=where) as name:
        tmp = Path(name)
        bounds(tmp, args.quick)
        if args.bounds:
            return
        results = latency(tmp, args.quick)
        base = percentile(results["none"], 99)
        print(f"remote-auth latency (ms), deadline {DEADLINE * 1000:.0f} ms")
        print(f"{'scenario':<34}{'n':>6}{'p50':>9}{'p99':>9}{'mean':>9}{'p99/none':>10}")
        labels = {
            "none": "no upstream (baseline)",
            "idle": "no upstream, 0.5 s idle before each",
            "healthy": "upstream healthy (answers in 20 ms)",
            "down": "upstream down, breaker open",
            "hanging": "upstream hanging, breaker closed",
        }
        for key in ("none", "idle", "healthy", "down", "hanging"):
            values = results[key]
            p99 = percentile(values, 99)
            print(
                f"{labels[key]:<34}{len(values):>6}{percentile(values, 50):>9.2f}{p99:>9.2f}"
                f"{statistics.fmean(values):>9.2f}{p99 / base:>10.2f}"
            )
        hang = percentile(results["hanging"], 99) - DEADLINE * 1000
        print(f"hanging p99 over the deadline: {hang:+.2f} ms (target <= +5 ms)")
        idle = {q: percentile(results["idle"], q) for q in (50, 99)}
        for q in (50, 99):
            over = percentile(results["hanging"], q) - DEADLINE * 1000 - idle[q]
            print(f"hanging p{q} over deadline + idle baseline p{q}: {over:+.2f} ms")
        print(
            f"down p99 vs baseline: {percentile(results['down'], 99) / base - 1:+.1%} "
            "(target within 10%)"
        )
        for batch in (200, 1000):
            out = throughput(tmp, args.quick, batch)
            rate = out["forwarded"] / out["seconds"] if out["seconds"] else 0
            print(
                f"forwarding backlog of {out['records']} records, batch {batch}: "
                f"{out['seconds']:.2f} s, {rate:,.0f} records/s "
                f"(acknowledged {out['forwarded']}, distinct keys received {out['received']})"
            )


if __name__ == "__main__":
    main()
