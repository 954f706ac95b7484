"""Time from a simulated terminal coming back from a reboot to its registration being restored.

Default reconciler settings (probe every 2 s, backoff 1 s doubling to 60 s); a simulated
terminal over HTTPS on loopback reboots N times (down 5 s each; a real one takes longer). For
each reboot the time from the terminal answering again to edged's POST /v1/event/subscribe is
measured in the simulator's own clock. Bounded: at most ``--limit`` seconds in all. Prints
median, p90, worst.

    .venv/bin/python bench/terminals.py [--reboots 20] [--down 5] [--limit 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edged import config, store
from edged.reconciler import TerminalReconciler
from edged.simulator import SimSettings, SimulatedTerminal

CONFIG = """
[receiver]
listen = ["127.0.0.1:8090"]
[storage]
state_dir = "{state}"
[gateway]
public_url = "http://127.0.0.1:8090"
[[terminals]]
name = "bench"
serial = "BENCH000000000001"
host = "127.0.0.1"
port = {port}
password = "admin-pass"
tls_fingerprint = "{fingerprint}"
"""


async def measure(reboots: int, down: float, limit: float) -> list[float]:
    """Seconds from each comeback to the restored registration."""
    folder = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    sim = SimulatedTerminal(SimSettings(serial="BENCH000000000001", cert_dir=str(folder)))
    await sim.start()
    text = CONFIG.format(state=folder / "state", port=sim.port, fingerprint=sim.fingerprint)
    cfg = config.parse(text, "bench.toml")
    st = store.Store(cfg.storage.database_path)
    rec = TerminalReconciler(cfg, cfg.terminals[0], st, {})
    task = asyncio.create_task(rec.run())
    results: list[float] = []
    deadline = time.monotonic() + limit
    try:
        for _ in range(reboots + 1):
            while not (sim.registered and (sim.registered_at or 0) >= (sim.came_back_at or 0)):
                if time.monotonic() > deadline:
                    print("stopped at the time limit", file=sys.stderr)
                    return results[1:]
                await asyncio.sleep(0.01)
            assert sim.registered_at is not None and sim.came_back_at is not None
            results.append(sim.registered_at - sim.came_back_at)
            await sim.reboot(down)
    finally:
        rec.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        st.close()
        await sim.stop()
    return results[1:]  # the first is the start-up registration, not a reboot


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reboots", type=int, default=20)
    parser.add_argument("--down", type=float, default=5.0, help="seconds away per reboot")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds in all, at most")
    args = parser.parse_args()
    times = asyncio.run(measure(args.reboots, args.down, args.limit))
    if not times:
        raise SystemExit("no reboot measured")
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    probe = config.ReconcilerConfig().probe_interval
    print(f"reboots measured:        {len(times)} (down {args.down:g} s each)")
    print(f"back -> registered  p50: {statistics.median(times):.2f} s")
    print(f"                    p90: {p90:.2f} s")
    print(f"                  worst: {max(times):.2f} s")
    ratio = statistics.median(times) / probe
    print(f"probe interval (bound):  {probe:g} s  (p50 / probe interval = {ratio:.2f})")


if __name__ == "__main__":
    main()
