"""Benchmark: remote-auth latency with an upstream, and forwarding throughput of a backlog.

Runs a real daemon (hypercorn on loopback) and a fake upstream (starlette on hypercorn, in a
thread) and measures, in one run:

- remote-auth p50/p99 with no upstream (the baseline), with the upstream healthy (answering in
  20 ms), down with the breaker open (target: within 10% of the baseline), and hanging with the
  breaker kept closed (target: deadline + 5 ms at most);
- how fast a 50,000-record outbox drains to a healthy upstream.

Every loop is bounded. Usage: ``.venv/bin/python bench/upstream.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from edged import config, outbox, store, upstream  # noqa: E402
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

    def __init__(self, delay: float = 0.0) -> None:
        command = [sys.executable, "-m", "tests.fakeupstream", "--delay", str(delay)]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and records")
    parser.add_argument(
        "--tmpfs", action="store_true", help="state in /dev/shm: no fsync cost, software only"
    )
    args = parser.parse_args()
    where = "/dev/shm" if args.tmpfs else None
    print(
        f"state on {'tmpfs (/dev/shm)' if args.tmpfs else 'disk (' + tempfile.gettempdir() + ')'}"
    )
    with tempfile.TemporaryDirectory(prefix="edged-bench-", dir=where) as name:
        tmp = Path(name)
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
