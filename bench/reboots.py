"""Reboots on every firmware: how soon edged restores a simulated terminal's registration.

For each firmware (1.0, 1.1, 1.2.1, 1.3.0) a simulated terminal over HTTPS on loopback, watched
by a reconciler with the default settings (probe every 2 s), reboots ``--reboots`` times. Most
reboots are short (0.3-1.5 s away, shorter than the probe interval: no probe need fail), every
fourth is long (5 s). For each, the time from the terminal answering again to edged's
``POST /v1/event/subscribe`` is read from the simulator's clock; a reboot not restored within
``--give-up`` seconds counts as missed. Bounded: at most ``--limit`` seconds a firmware.
Prints, per firmware, restored/total, median and worst.

    .venv/bin/python bench/reboots.py [--reboots 20] [--give-up 30] [--limit 300]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from edged import config
from edged.sim import api as simapi
from edged.sim.terminal import SimSettings, SimulatedTerminal
from edged.store import events as store
from edged.terminals.reconciler import TerminalReconciler

SERIAL = "BENCH000000000002"
TOML = """
[storage]
state_dir = "{state}"
[gateway]
public_url = "http://127.0.0.1:9"
[[terminals]]
name = "bench"
serial = "{serial}"
host = "127.0.0.1"
port = {port}
password = "admin-pass"
tls_fingerprint = "{fingerprint}"
"""


def away(n: int, rng: random.Random) -> float:
    """Seconds away for the n-th reboot: short ones, and every fourth a long one."""
    return 5.0 if n % 4 == 3 else rng.uniform(0.3, 1.5)


async def restored(sim: SimulatedTerminal, give_up: float) -> float | None:
    """Seconds from the comeback to the registration, or None when not within ``give_up``."""
    back = sim.came_back_at or 0.0
    end = time.monotonic() + give_up
    while time.monotonic() < end:
        if sim.registered and (sim.registered_at or 0.0) > back:
            return (sim.registered_at or 0.0) - back
        await asyncio.sleep(0.01)
    return None


async def firmware_run(name: str, reboots: int, give_up: float, limit: float) -> list[float | None]:
    """Reboot one simulated terminal of firmware ``name``; one result per reboot."""
    folder = Path(tempfile.mkdtemp(prefix="edged-bench-"))
    sim = SimulatedTerminal(SimSettings(serial=SERIAL, cert_dir=str(folder), firmware=name))
    await sim.start()
    text = TOML.format(
        state=folder / "state", serial=SERIAL, port=sim.port, fingerprint=sim.fingerprint
    )
    cfg = config.parse(text, "bench.toml")
    st = store.Store(cfg.storage.database_path)
    rec = TerminalReconciler(cfg, cfg.terminals[0], st, {})
    task = asyncio.create_task(rec.run())
    rng = random.Random(11)
    results: list[float | None] = []
    deadline = time.monotonic() + limit
    try:
        if await restored(sim, give_up) is None:
            raise SystemExit(f"firmware {name}: never registered at start-up")
        for n in range(reboots):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(rng.uniform(0.5, 2.5))  # not in step with the probes
            await sim.reboot(away(n, rng))
            results.append(await restored(sim, give_up))
    finally:
        rec.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        st.close()
        await sim.stop()
    return results


def report(name: str, results: list[float | None]) -> str:
    """One line: restored/total, median and worst of the restored ones."""
    times = [t for t in results if t is not None]
    if not times:
        return f"{name:<6} restored 0/{len(results)}"
    return (
        f"{name:<6} restored {len(times)}/{len(results)}  "
        f"median {statistics.median(times):5.2f} s  worst {max(times):5.2f} s"
    )


def main() -> None:
    """Run every firmware and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reboots", type=int, default=20)
    parser.add_argument("--give-up", type=float, default=30.0, help="seconds, per reboot")
    parser.add_argument("--limit", type=float, default=300.0, help="seconds a firmware, at most")
    args = parser.parse_args()
    probe = config.ReconcilerConfig().probe_interval
    print(f"probe interval {probe:g} s; reboots 0.3-1.5 s away, every fourth 5 s")
    for name in simapi.FIRMWARES:
        results = asyncio.run(firmware_run(name, args.reboots, args.give_up, args.limit))
        print(report(name, results), flush=True)


if __name__ == "__main__":
    main()
