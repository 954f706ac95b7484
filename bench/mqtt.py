"""Benchmark: a 50,000-record backlog drained to a real Mosquitto, and remote-auth with MQTT on.

Starts Debian's ``mosquitto`` on a free loopback port (needs the program) and measures, in one
run:

- how fast a 50,000-record backlog leaves through the MQTT publisher to the broker, counted two
  ways: the durable cursor reaching the last record (every record acknowledged by the broker),
  and a consumer in another process (QoS 1) having received every record (target >= 2,000
  records/s);
- remote-auth p50/p99 of a real daemon with ``[mqtt]`` off and on (publishing every record live
  to the broker), alternated in rounds so drift hits both alike (target: within noise).

Every loop is bounded. Usage: ``.venv/bin/python bench/mqtt.py [--quick] [--tmpfs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import upstream as ubench  # noqa: E402
from edged.mqtt.feature import Mqtt  # noqa: E402
from edged.store import events as store  # noqa: E402
from edged.store import mqttstate  # noqa: E402
from tests.conftest import LiveDaemon  # noqa: E402
from tests.mqttfix import MOSQUITTO, Broker, mqtt_toml  # noqa: E402

CONSUMER = textwrap.dedent(
    """
    import sys, threading, time
    from edged.mqtt.link import new_client
    port, topic, want = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    keys, done = set(), threading.Event()
    def connected(c, u, f, rc, *rest):
        c.subscribe(topic, qos=1)
        print("ready", flush=True)
    def message(c, u, m):
        keys.add(bytes(m.payload))
        if len(keys) >= want:
            done.set()
    c = new_client("bench-consumer")
    c.on_connect, c.on_message = connected, message
    c.connect("127.0.0.1", port, 60)
    c.loop_start()
    done.wait(600)
    print(len(keys), time.perf_counter(), flush=True)
    """
)


def backlog(tmp: Path, count: int) -> dict[str, Any]:
    broker = Broker(tmp, "drain")
    broker.start()
    cfg = ubench.make_config(tmp / "drain-state", mqtt_toml(broker.port))
    ubench.fill_backlog(cfg.storage.database_path, count)
    consumer = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, str(broker.port), "edged/test_site/records", str(count)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert consumer.stdout is not None
    assert consumer.stdout.readline().strip() == "ready"
    st = store.Store(cfg.storage.database_path, None)
    feature = Mqtt(cfg, st)

    async def drain() -> float:
        task = asyncio.create_task(feature.service())
        start = time.perf_counter()
        try:
            while time.perf_counter() - start < 300:
                if mqttstate.cursor(st.db.conn) >= count:
                    break
                await asyncio.sleep(0.02)
            return start
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        start = asyncio.run(drain())
        acked = time.perf_counter() - start
        out, _ = consumer.communicate(timeout=300)
        received, at = out.split()
        done = mqttstate.cursor(st.db.conn)
    finally:
        st.close()
        broker.stop()
    return {
        "records": count,
        "acknowledged": done,
        "received": int(received),
        "acked_seconds": acked,
        "received_seconds": float(at) - start,
    }


def latency(tmp: Path, quick: bool) -> dict[str, list[float]]:
    broker = Broker(tmp, "live")
    broker.start()
    n = 400 if quick else 2400
    results: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for round_ in range(8):
            for key, extra in (("off", ""), ("on", mqtt_toml(broker.port))):
                live = LiveDaemon(ubench.make_config(tmp / f"{key}{round_}", extra))
                try:
                    results[key] += ubench.measure(live, n // 8)
                finally:
                    live.stop()
    finally:
        broker.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and records")
    parser.add_argument(
        "--tmpfs", action="store_true", help="state in /dev/shm: no fsync cost, software only"
    )
    args = parser.parse_args()
    if MOSQUITTO is None:
        sys.exit("mosquitto is not installed (apt-get install mosquitto)")
    where = "/dev/shm" if args.tmpfs else None
    print(
        f"state on {'tmpfs (/dev/shm)' if args.tmpfs else 'disk (' + tempfile.gettempdir() + ')'}"
    )
    with tempfile.TemporaryDirectory(prefix="edged-bench-", dir=where) as name:
        tmp = Path(name)
        drained = backlog(tmp, 5000 if args.quick else 50_000)
        n = drained["records"]
        print(
            f"backlog of {n} records: acknowledged {drained['acknowledged']} in "
            f"{drained['acked_seconds']:.2f} s ({n / drained['acked_seconds']:.0f} records/s); "
            f"consumer received {drained['received']} in {drained['received_seconds']:.2f} s "
            f"({drained['received'] / drained['received_seconds']:.0f} records/s; target >= 2000)"
        )
        results = latency(tmp, args.quick)
        base = ubench.percentile(results["off"], 99)
        print("remote-auth latency (ms)")
        print(f"{'scenario':<24}{'n':>6}{'p50':>9}{'p99':>9}{'mean':>9}{'p99/off':>9}")
        for key, label in (("off", "[mqtt] off"), ("on", "[mqtt] on, publishing")):
            values = results[key]
            p99 = ubench.percentile(values, 99)
            print(
                f"{label:<24}{len(values):>6}{ubench.percentile(values, 50):>9.2f}{p99:>9.2f}"
                f"{statistics.fmean(values):>9.2f}{p99 / base:>9.2f}"
            )


if __name__ == "__main__":
    main()
