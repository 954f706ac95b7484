"""Decision speed at site scale: 100,000 people, 200 groups, 64 doors in a real SQLite file.

Prints figures, never pass/fail:
  1. import time of the whole document (100,000 people);
  2. in-process decision latency, loader query plus the pure function (p50/p99);
  3. remote-auth HTTP latency through a real edged (hypercorn on loopback, 8 concurrent
     clients, a bounded number of requests) with 100 people loaded vs 100,000, same run.

Run: .venv/bin/python bench/policy.py [--people 100000] [--decisions 20000] [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from indaemon import InThread

from edged import config
from edged.access import lookup, people
from edged.decide import policy
from edged.model import Event, Kind, User
from edged.store import events as store

TZ = "Europe/Berlin"
GROUPS = 200
DOORS = 64
CLIENTS = 8
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def document(count: int, rnd: random.Random) -> dict[str, Any]:
    """A site: people in 1-3 groups, 20 schedules, holidays, 64 doors with 10 permissions each."""
    schedules = []
    for i in range(20):
        periods = [
            {"days": rnd.sample(DAYS, 5), "start": f"{rnd.randint(5, 9):02d}:00", "end": "19:00"},
            {"days": ["sat"], "start": "22:00", "end": "04:00"},
        ]
        schedules.append({"id": f"s{i:02d}", "periods": periods})
    schedules.append(
        {"id": "always", "periods": [{"days": DAYS, "start": "00:00", "end": "24:00"}]}
    )
    doors = [
        {"name": f"door-{d:02d}", "min_score": 0.5, "anti_passback": 5 if d % 2 else 0}
        for d in range(DOORS)
    ]
    permissions = []
    for d in range(DOORS):
        for g in rnd.sample(range(GROUPS), 10):
            sched = "always" if g % 3 == 0 else f"s{g % 20:02d}"
            permissions.append({"group": f"g{g:03d}", "door": f"door-{d:02d}", "schedule": sched})
    holidays = [{"name": f"h{m}", "date": f"{m:02d}-{m + 3:02d}"} for m in range(1, 13)]
    rows = [
        {
            "id": f"p{i:06d}",
            "name": f"Person {i}",
            "ic_number": f"{10_000_000 + i}",
            "groups": [f"g{g:03d}" for g in rnd.sample(range(GROUPS), rnd.randint(1, 3))],
        }
        for i in range(count)
    ]
    return {
        "groups": [{"id": f"g{g:03d}"} for g in range(GROUPS)],
        "schedules": schedules,
        "holidays": holidays,
        "doors": doors,
        "permissions": permissions,
        "people": rows,
    }


def load(path: Path, count: int, rnd: random.Random) -> tuple[float, float]:
    """Import a site of ``count`` people; returns (parse seconds, apply seconds)."""
    data = document(count, rnd)
    db = store.open_database(path)
    started = time.perf_counter()
    doc = people.parse_document(data, ZoneInfo(TZ))
    parsed = time.perf_counter()
    people.apply_document(db.conn, doc, replace=True)
    applied = time.perf_counter()
    db.conn.close()
    return parsed - started, applied - parsed


def history(path: Path, count: int, rows: int, rnd: random.Random) -> None:
    """Past decisions, so anti-passback reads a realistic events table."""
    conn = store.connect(path)
    now = time.time()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events (dedup_key, kind, serial, received_at, person_id, door, decision, "
        "response, raw) VALUES (?, 'auth', 'BENCH', ?, ?, ?, ?, '{}', '{}')",
        [
            (
                f"hist-{i}",
                now - rnd.uniform(60, 86400 * 30),
                f"p{rnd.randrange(count):06d}",
                f"door-{rnd.randrange(DOORS):02d}",
                rnd.choice(["pass", "deny"]),
            )
            for i in range(rows)
        ],
    )
    conn.execute("COMMIT")
    conn.close()


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def in_process(path: Path, count: int, decisions: int, rnd: random.Random) -> list[float]:
    """Latency of loader + decide for random people at random doors."""
    conn = store.connect(path, readonly=True)
    tz = ZoneInfo(TZ)
    tips = policy.Tips()
    out = []
    granted = 0
    for _ in range(decisions):
        i = rnd.randrange(count + count // 20)  # ~5% unknown credentials
        user = User(user_id=f"x{i}", ic_number=f"{10_000_000 + i}")
        event = Event(Kind.AUTH, "BENCH", "k", occurred_at=time.time(), score=0.9, user=user)
        door = f"door-{rnd.randrange(DOORS):02d}"
        started = time.perf_counter()
        now = time.time()
        settings, view = lookup.load(conn, event, door, now, tz)
        decision = policy.decide(event, settings, view, now, None, tips)
        out.append(time.perf_counter() - started)
        granted += decision.granted
    conn.close()
    print(f"  granted {granted} of {decisions}")
    return out


def site_config(state: Path) -> config.Config:
    """A daemon configuration: loopback, 64 terminals, one per door."""
    terminals = "".join(
        f'\n[[terminals]]\nname = "t{d:02d}"\nserial = "BENCH{d:04d}"\ndoor = "door-{d:02d}"\n'
        for d in range(DOORS)
    )
    text = (
        f'[site]\ntimezone = "{TZ}"\n'
        '[receiver]\nlisten = ["127.0.0.1:0"]\nallowed_networks = ["127.0.0.0/8"]\n'
        '[admin]\nlisten = ["127.0.0.1:0"]\n'
        f'[storage]\nstate_dir = "{state}"\nstore_images = false\n' + terminals
    )
    return config.parse(text, "bench")


async def http_phase(url: str, count: int, requests: int, seed: int) -> list[float]:
    """CLIENTS concurrent clients, ``requests`` remote-auth requests in all."""
    rnd = random.Random(seed)
    latencies: list[float] = []
    per_client = requests // CLIENTS
    counter = iter(range(10**9))

    async def client() -> None:
        async with httpx.AsyncClient(timeout=10.0) as http:
            for _ in range(per_client):
                i = rnd.randrange(count)
                n = next(counter)
                body = {
                    "deviceSN": f"BENCH{rnd.randrange(DOORS):04d}",
                    "recognizeStatus": 4,
                    "recognizeScore": 0.9 + n * 1e-9,  # unique: not a duplicate
                    "entry_mode": 1,
                    "mask": 1,
                    "rgb_image": "",
                    "timestamp": int(time.time()),
                    "user": {
                        "name": "x",
                        "user_id": f"x{i}",
                        "type": 1,
                        "ic_number": f"{10_000_000 + i}",
                    },
                }
                started = time.perf_counter()
                response = await http.post(url, json=body)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return latencies


def http(state: Path, count: int, requests: int, seed: int) -> list[float]:
    """Start edged on ``state``, warm up, measure one round, stop it."""
    live = InThread(site_config(state))
    try:
        asyncio.run(http_phase(live.url, count, min(400, requests), seed + 1))  # warm-up
        return asyncio.run(http_phase(live.url, count, requests, seed))
    finally:
        live.stop()


def main() -> int:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--history", type=int, default=200_000, help="past events in each db")
    parser.add_argument("--rounds", type=int, default=2, help="alternating HTTP rounds")
    args = parser.parse_args()
    rnd = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        print(f"import: {args.people} people, {GROUPS} groups, {DOORS} doors")
        parse_s, apply_s = load(big / "edged.db", args.people, rnd)
        print(f"  parse {parse_s:.2f} s + apply {apply_s:.2f} s = {parse_s + apply_s:.2f} s")
        load(small / "edged.db", 100, random.Random(7))
        history(big / "edged.db", args.people, args.history, random.Random(3))
        history(small / "edged.db", 100, args.history, random.Random(3))  # same events table
        print(f"in-process decision (lookup.load + policy.decide), {args.decisions} decisions:")
        times = in_process(big / "edged.db", args.people, args.decisions, rnd)
        print(
            f"  p50 {pct(times, 0.5):.3f} ms  p99 {pct(times, 0.99):.3f} ms  "
            f"max {max(times) * 1000:.3f} ms  mean {statistics.fmean(times) * 1000:.3f} ms"
        )
        print(
            f"remote-auth over HTTP, {CLIENTS} clients, {args.rounds} alternating rounds of "
            f"{args.requests} requests per size:"
        )
        results: dict[int, list[float]] = {100: [], args.people: []}
        for n in range(args.rounds):
            sizes = [(small, 100), (big, args.people)]
            for state, count in sizes if n % 2 == 0 else sizes[::-1]:
                lat = http(state, count, args.requests, 11 + n)
                results[count].extend(lat)
                print(
                    f"  round {n + 1} {count:>7} people: p50 {pct(lat, 0.5):.2f} ms  "
                    f"p99 {pct(lat, 0.99):.2f} ms"
                )
        base, loaded = results[100], results[args.people]
        for count, lat in results.items():
            print(
                f"  all {count:>7} people: p50 {pct(lat, 0.5):.2f} ms  p99 {pct(lat, 0.99):.2f} ms"
            )
        print(f"  p99 ratio {pct(loaded, 0.99) / pct(base, 0.99):.2f} (target <= 1.20)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
