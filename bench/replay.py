"""Benchmark a terminal's replay after an outage, with live remote-auth beside it.

``make bench-replay`` (or ``.venv/bin/python bench/replay.py [--gateway-cpu] [--json FILE]``)
runs one scenario:

1. a simulated terminal (``edged.sim.terminal``, HTTPS on loopback, on its own thread in this
   process) records ``--records`` passages (50,000: its buffer) while edged is down: they wait
   in its buffer and its history. It re-sends them as a terminal does, one at a time over one
   kept-alive connection, with a lean client (``edged.sim.push``, ~0.15 ms a push);
2. edged starts (``python -m edged run``, state on disk, fsync slowed by ``--delay`` ms through
   ``bench/tools/slowsync.c`` as on an SD card). Its reconciler registers the terminal and
   back-fills the history since it last synced (pages of records, stored in the writer thread),
   while the terminal re-sends its buffer one push at a time (most of them duplicates of what
   the back-fill stored);
3. another process sends live remote-auth requests for a known person at ``--rate`` per second
   all along, and for ``--idle`` seconds after the backlog drained.

It prints the live remote-auth p50/p99 idle, during the back-fill and during the push replay,
the pushes re-sent per second after the back-fill, and the drain time (edged's start to the
terminal's buffer empty with every record stored).
``--pin`` puts edged on core 0 and this process (the simulated terminal) and the prober on
core 1, as on a site where the terminal is a device of its own.
``--gateway-cpu`` confines edged to one core at a third of its speed (a cgroup CPU quota of
33 ms per 100 ms and a cpuset of one core; cgroup v2 ``cpu.max`` where mounted, else v1
``cpu.cfs_quota_us``), roughly a Raspberry Pi 4 core. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import receiver as rb  # bench/receiver.py: ports, start and stop, percentiles
import sdcard  # bench/sdcard.py: the fsync delay, the code chosen by PYTHONPATH
from loadgen import Client, Options, auth_template

HERE = Path(__file__).resolve().parent
SERIAL = "PS71HD01MC22C00077"
USER_ID = "e-1"  # the simulator's first person
TARGET_P99_RATIO = 2.0
TARGET_P99_MS = 20.0
TARGET_DRAIN_S = 60.0

# bench/receiver.py's configuration (its terminal last), with the terminal managed: the keys
# below continue its [[terminals]] table.
MANAGED = """host = "127.0.0.1"
port = {sim_port}
password = "{password}"
tls_fingerprint = "{fingerprint}"

[gateway]
public_url = "http://127.0.0.1:{port}"

[reconciler]
probe_interval = 1
"""

PEOPLE = {
    "people": [{"id": USER_ID, "name": "Ann Example", "user_id": USER_ID, "groups": "staff"}],
    "permissions": [{"group": "staff", "door": "bench-door"}],
}


# ----- the live prober (its own process) ----------------------------------------------------


async def probe(opts: dict[str, Any]) -> list[list[float]]:
    """Remote-auth requests at ``rate``/s until ``stop`` exists: [sent at, ms, status]."""
    serial, user = opts.get("serial", SERIAL), opts.get("user", USER_ID)
    o = Options("127.0.0.1", opts["port"], "/auth", "auth", 0, 0, 0, 1, serial, user, 0)
    conn, pieces = Client(o), auth_template(serial, user)
    stop, interval, out, n = Path(opts["stop"]), 1.0 / opts["rate"], [], 0
    start = time.monotonic()
    while not stop.exists():
        n += 1
        score = repr(0.5 + n * 1e-9).encode()
        now = str(int(time.time())).encode()
        body = b"".join((pieces[0], score, pieces[1], now, pieces[2]))
        sent, t0 = time.time(), time.perf_counter()
        try:
            status, _ = await conn.request(body)
        except (OSError, asyncio.IncompleteReadError, RuntimeError):
            conn.close()
            status = 0
        out.append([sent, (time.perf_counter() - t0) * 1000, status])
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
    return out


# ----- the scenario -------------------------------------------------------------------------


@dataclass
class Timeline:
    """When things happened, in wall-clock seconds."""

    started: float = 0.0
    backfill_first: float | None = None
    backfill_last: float | None = None
    drained: float | None = None
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, pages, buf, n


def confine(pid: int, name: str) -> str:
    """Put ``pid`` in a cgroup of one core at a third of its speed; returns what was used."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    cpu = str(min(os.sched_getaffinity(0)) + 1 if len(os.sched_getaffinity(0)) > 1 else 0)
    if v2.exists():
        group = Path("/sys/fs/cgroup") / name
        group.mkdir(exist_ok=True)
        (group / "cpu.max").write_text("33333 100000")
        (group / "cpuset.cpus").write_text(cpu)
        (group / "cgroup.procs").write_text(str(pid))
        return f"cgroup v2 {group}: cpu.max 33333 100000, cpuset.cpus {cpu}"
    quota, cpuset = Path("/sys/fs/cgroup/cpu") / name, Path("/sys/fs/cgroup/cpuset") / name
    quota.mkdir(exist_ok=True)
    cpuset.mkdir(exist_ok=True)
    (quota / "cpu.cfs_period_us").write_text("100000")
    (quota / "cpu.cfs_quota_us").write_text("33333")
    (cpuset / "cpuset.cpus").write_text(cpu)
    (cpuset / "cpuset.mems").write_text(Path("/sys/fs/cgroup/cpuset/cpuset.mems").read_text())
    for group in (quota, cpuset):
        (group / "cgroup.procs").write_text(str(pid))
    return f"cgroup v1 {quota} (cfs_quota_us 33333 / cfs_period_us 100000) + {cpuset} (cpus {cpu})"


def unconfine(name: str) -> None:
    """Remove the cgroups made by confine() (once their processes are gone)."""
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuset"):
        with contextlib.suppress(OSError):
            (Path(root) / name).rmdir()


@contextmanager
def edged(
    tmp: Path, env: dict[str, str], text: str, pin: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """Import the person, mark the terminal synced an hour ago, start edged; stop it."""
    cfg = tmp / "edged.toml"
    cfg.write_text(text)
    people = tmp / "people.json"
    people.write_text(json.dumps(PEOPLE))
    environ = {**os.environ, **env}
    cmd = [sys.executable, "-m", "edged"]
    subprocess.run(
        [*cmd, "people", "import", str(people), "-c", str(cfg)],
        check=True,
        env=environ,
        stdout=subprocess.DEVNULL,
    )
    db = sqlite3.connect(tmp / "state" / "edged.db")
    db.execute(  # edged knew the terminal before the outage: it back-fills the gap
        "INSERT INTO terminal_sync (serial, synced_until) VALUES (?, ?)",
        (SERIAL, time.time() - 3600),
    )
    db.commit()
    db.close()
    with (tmp / "edged.log").open("wb") as err:
        proc = subprocess.Popen(
            [*cmd, "run", "-c", str(cfg)],
            stderr=err,
            env=environ,
            preexec_fn=rb.pin_edged if pin else None,
        )
    try:
        yield proc
    finally:
        rb.stop(proc)


def stored(client: httpx.Client, admin_port: int) -> int:
    """Records edged has stored (admin /readyz)."""
    url = f"http://127.0.0.1:{admin_port}/readyz"
    return int(client.get(url).json()["checks"]["store"]["records"])


async def watch(sim: Any, admin_port: int, total: int, line: Timeline, limit: float) -> None:
    """Poll the terminal and edged until the backlog is drained (or ``limit`` s passed).

    One client for every poll: a new one builds an SSL context (about 20 ms of CPU, the system's
    CA certificates read), which at 20 polls a second took a third of a core from the terminal
    and edged.
    """
    with httpx.Client(timeout=10) as client:
        await _watch(client, sim, admin_port, total, line, limit)


async def _watch(
    client: httpx.Client, sim: Any, admin_port: int, total: int, line: Timeline, limit: float
) -> None:
    while time.time() - line.started < limit:
        pages = sim.requests["POST /v1/event/records"]
        try:
            count = await asyncio.to_thread(stored, client, admin_port)
        except Exception:
            count = 0
        now = time.time()
        line.samples.append((now, pages, len(sim.buffer), count))
        if pages and line.backfill_first is None:
            line.backfill_first = now
        if len(line.samples) > 1 and pages != line.samples[-2][1]:
            line.backfill_last = now
        if not sim.buffer and count >= total:
            line.drained = now
            return
        await asyncio.sleep(0.05)


async def scenario(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The outage, the replay, the idle tail; all figures."""
    from edged.sim.terminal import SimSettings, SimulatedTerminal

    port, admin_port = rb.free_port(), rb.free_port()
    dest = f"http://127.0.0.1:{port}/eventRcv"
    sim = SimulatedTerminal(
        SimSettings(serial=SERIAL, cert_dir=str(tmp / "certs"), event_dest=dest, retry_seconds=0.2)
    )
    await sim.start()
    sim.emit(args.records)  # edged is down: they wait in the buffer and the history
    lib = sdcard.build_slowsync(tmp)
    code = Path(args.base).resolve() if args.base else HERE.parent
    env = sdcard.environment(code, lib, args.delay)
    text = rb.CONFIG.format(
        port=port, admin_port=admin_port, state=tmp / "state", serial=SERIAL
    ) + MANAGED.format(
        port=port, sim_port=sim.port, password=sim.settings.password, fingerprint=sim.fingerprint
    )
    stop = tmp / "stop-probe"
    line = Timeline()
    confined = "no (all cores, full speed)"
    cgroup = f"edged-replay-{os.getpid()}"
    try:
        if args.pin:
            confined = (
                f"pinned to core {rb.EDGED_CPU} (the terminal and prober on core {rb.OTHERS_CPU})"
            )
        with edged(tmp, env, text, args.pin) as proc:
            line.started = time.time()
            if args.gateway_cpu:
                confined = confine(proc.pid, cgroup)
            rb.wait_listening(port, proc, "edged", tmp / "edged.log")
            rb.wait_listening(admin_port, proc, "edged admin", tmp / "edged.log")
            opts = json.dumps({"port": port, "rate": args.rate, "stop": str(stop)})
            prober = subprocess.Popen(
                [sys.executable, str(Path(__file__)), "--probe", opts], stdout=subprocess.PIPE
            )
            await watch(sim, admin_port, args.records, line, args.limit)
            await asyncio.sleep(args.idle)
            stop.touch()
            out, _ = prober.communicate(timeout=60)
    finally:
        await sim.stop()
        unconfine(cgroup)
    return figures(json.loads(out), line, args, confined)


def figures(
    probes: list[list[float]], line: Timeline, args: argparse.Namespace, confined: str
) -> dict[str, Any]:
    """Split the live samples by phase; percentiles and the drain time."""
    first = line.backfill_first or line.started
    last = (line.backfill_last or first) + 0.1  # the last page's chunks are stored after it
    phases, failed = split(probes, first, last, line.drained)
    out: dict[str, Any] = {"phases": {}, "failed_probes": failed, "confined": confined}
    for name, values in phases.items():
        ordered = sorted(values)
        us = [int(v * 1000) for v in ordered]
        out["phases"][name] = {
            "n": len(values),
            "p50_ms": rb.percentile(us, 50) / 1000,
            "p99_ms": rb.percentile(us, 99) / 1000,
            "max_ms": ordered[-1] if ordered else float("nan"),
        }
    out["drain_s"] = (line.drained - line.started) if line.drained else None
    out["backfill_s"] = (last - first) if line.backfill_first else None
    out["backfill_pages"] = line.samples[-1][1] if line.samples else 0
    out["left_in_buffer"] = line.samples[-1][2] if line.samples else None
    out["pushes_per_s"] = push_rate(line, last)
    out["stored"] = line.samples[-1][3] if line.samples else None
    # the raw figures, for a look at when the slow answers came (--json)
    out["marks"] = {"started": line.started, "backfill": [first, last], "drained": line.drained}
    out["probes"] = probes
    out["samples"] = line.samples
    return out


def split(
    probes: list[list[float]], first: float, last: float, drained: float | None
) -> tuple[dict[str, list[float]], int]:
    """The answered live samples (ms) by phase: the back-fill from ``first`` to ``last``, the
    push replay from there to the drain, idle from 1 s after it; and how many failed. Also
    ``bench/pooled.py``'s, for the runs' ``--json`` files (``marks``)."""
    end = drained or float("inf")
    phases: dict[str, list[float]] = {"idle": [], "back-fill": [], "push replay": []}
    failed = 0
    for sent, ms, status in probes:
        if status != 200:
            failed += 1
        elif first <= sent < last:
            phases["back-fill"].append(ms)
        elif last <= sent < end:
            phases["push replay"].append(ms)
        elif sent >= end + 1.0:
            phases["idle"].append(ms)
    return phases, failed


def push_rate(line: Timeline, since: float) -> float | None:
    """Pushes re-sent per second from ``since`` (the back-fill's end) to the drain."""
    after = [s for s in line.samples if s[0] >= since]
    if not line.drained or len(after) < 2 or after[-1][0] <= after[0][0]:
        return None
    return (after[0][2] - after[-1][2]) / (after[-1][0] - after[0][0])


def report(data: dict[str, Any], args: argparse.Namespace) -> str:
    """The figures, against the targets."""
    cond, ph = data["conditions"], data["phases"]
    lines = [
        f"machine: {cond['cores']} cores, {cond['cpu']}, load average before "
        f"{' '.join(cond['loadavg'])}, after {' '.join(data['loadavg_after'])}",
        f"python {cond['python']}, sqlite {cond['sqlite']}; code: {args.base or 'this tree'}",
        f"backlog {args.records} records; fsync +{args.delay:g} ms; live remote-auth "
        f"{args.rate:g}/s from another process; edged confined: {data['confined']}",
        "",
        f"{'phase':12} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name in ("idle", "back-fill", "push replay"):
        r = ph[name]
        lines.append(
            f"{name:12} {r['n']:5} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.1f}"
        )
    drain = data["drain_s"]
    lines += [
        "",
        f"back-fill: {data['backfill_pages']} pages in {data['backfill_s'] or 0:.1f} s; "
        f"stored {data['stored']}, left in the terminal's buffer {data['left_in_buffer']}; "
        f"failed probes {data['failed_probes']}",
        f"push replay after the back-fill: {data['pushes_per_s'] or 0:.0f} pushes/s",
        f"drained in {drain:.1f} s" if drain else f"NOT drained within {args.limit:g} s",
    ]
    idle = ph["idle"]["p99_ms"]
    worst = max(ph["back-fill"]["p99_ms"], ph["push replay"]["p99_ms"])
    for text, met in (
        (f"live p99 during replay {worst:.2f} ms <= 2 x idle {idle:.2f} ms", worst <= 2 * idle),
        (f"live p99 during replay {worst:.2f} ms <= {TARGET_P99_MS:g} ms", worst <= TARGET_P99_MS),
        (f"drained in <= {TARGET_DRAIN_S:g} s", bool(drain and drain <= TARGET_DRAIN_S)),
    ):
        lines.append(f"target {text} -> {'met' if met else 'NOT met'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=50_000, help="the terminal's backlog")
    p.add_argument("--delay", type=float, default=5.0, help="added to every fsync, ms")
    p.add_argument("--rate", type=float, default=10.0, help="live remote-auth requests per s")
    p.add_argument("--idle", type=float, default=30.0, help="seconds measured after the drain")
    p.add_argument("--limit", type=float, default=600.0, help="give up the drain after, s")
    cpu = p.add_mutually_exclusive_group()
    cpu.add_argument("--gateway-cpu", action="store_true", help="edged on 1 core at 1/3 speed")
    cpu.add_argument("--pin", action="store_true", help="edged on core 0, the rest on core 1")
    p.add_argument("--base", metavar="DIR", help="run the code in DIR instead of this tree")
    p.add_argument("--json", metavar="FILE", help="also write all figures as JSON")
    p.add_argument("--probe", metavar="JSON", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the scenario and print the figures."""
    args = parse_args(argv)
    if args.probe:
        json.dump(asyncio.run(probe(json.loads(args.probe))), sys.stdout)
        return 0
    if args.pin:
        rb.pin_others()
    cond = rb.conditions()
    with tempfile.TemporaryDirectory(prefix="edged-replay-", dir="/var/tmp") as tmp:
        os.chdir(tmp)  # ``python -m`` puts the working directory first on sys.path
        data = asyncio.run(scenario(args, Path(tmp)))
        if args.json:  # edged's log beside the figures
            log_text = (Path(tmp) / "edged.log").read_text(errors="replace")
            Path(args.json).with_suffix(".log").write_text(log_text)
    data["conditions"] = cond
    data["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    print(report(data, args))
    if args.json:
        Path(args.json).write_text(json.dumps(data) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
