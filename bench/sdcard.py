"""Benchmark edged on an SD card's fsync: records, duplicates and bytes written per record.

``make bench-sdcard`` (or ``.venv/bin/python bench/sdcard.py [--base DIR] [--json FILE]``)
builds ``bench/tools/slowsync.c`` with ``cc`` (an LD_PRELOAD that makes every fsync and
fdatasync sleep ``SLOWSYNC_MS`` after the real call: 5 ms is what a gateway's SD card costs) and
starts a real edged (``python -m edged run``, state on disk, one terminal, one person), once with
the delay and once without (the same library at 0 ms). Against each, from one keep-alive
connection, one request at a time as a terminal replays:

- **records**: new pushes without snapshot; records/s and bytes written per record;
- **duplicates**: the same pushes again; duplicates/s and bytes written per duplicate;
- **group of 7**: 7 connections pushing new records at once (commits shared); bytes per record;
- **remote-auth**: new remote-auth requests for the known person, p50/p99.

Bytes written are ``write_bytes`` of ``/proc/<pid>/io`` (what the process sent to the block
layer, page by page) of the daemon and its snapshot writer process. With ``--base DIR`` (a
worktree of another revision, e.g. ``git worktree add /tmp/base main``) that code runs as well,
alternately with this one, through ``PYTHONPATH``. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import receiver as rb  # bench/receiver.py: the daemon's start, ports, percentiles
from loadgen import Client, Options, auth_template, push_template

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SOURCE = HERE / "tools" / "slowsync.c"
TARGET_KIB_PER_RECORD = 12.0


def build_slowsync(folder: Path) -> Path:
    """Compile the fsync delay library into ``folder``; returns the .so's path."""
    lib = folder / "slowsync.so"
    cmd = ["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(SOURCE), "-ldl"]
    subprocess.run(cmd, check=True)
    return lib


def written(pid: int) -> int:
    """write_bytes of a process and its live children (edged's snapshot writer)."""
    total = 0
    for proc in (pid, *rb.children(pid)):
        try:
            for line in Path(f"/proc/{proc}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# A venv's editable install of edged is found before PYTHONPATH: this shim, imported at start-up
# (sitecustomize), takes its finder away so ``edged`` comes from the code chosen by PYTHONPATH.
SHIM = """import sys
sys.meta_path[:] = [
    f for f in sys.meta_path if "__editable__" not in str(getattr(f, "__module__", ""))
]
"""


def environment(code: Path, lib: Path, delay_ms: float) -> dict[str, str]:
    """What edged runs with: the code to import (PYTHONPATH), the fsync delay."""
    shim = lib.parent / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    return {
        "PYTHONPATH": f"{shim}:{code}",
        "LD_PRELOAD": str(lib),
        "SLOWSYNC_MS": str(delay_ms),
    }


@contextmanager
def daemon(tmp: Path, code: Path, lib: Path, delay_ms: float) -> Iterator[rb.Edged]:
    """A fresh edged with its own state folder."""
    folder = Path(tempfile.mkdtemp(dir=tmp))
    with rb.edged_server(folder, environment(code, lib, delay_ms)) as edged:
        yield edged


def client(port: int) -> Client:
    """One keep-alive connection speaking the terminal's headers."""
    opts = Options("127.0.0.1", port, "/eventRcv", "push", 0, 0, 0, 1, rb.SERIAL, rb.USER_ID, 0)
    return Client(opts)


def pushes(tag: str, count: int) -> list[bytes]:
    """New type 0 pushes without snapshot (the size of a replayed record), unique uuids."""
    p = push_template(rb.SERIAL, rb.USER_ID)
    now = str(int(time.time())).encode()
    return [
        b"".join((p[0], f'"{tag}-{i}"'.encode(), p[1], now, p[2], b'""', p[3]))
        for i in range(count)
    ]


def auths(count: int, seed: int) -> list[bytes]:
    """New remote-auth requests for the known person (a distinct score each)."""
    p = auth_template(rb.SERIAL, rb.USER_ID)
    now = str(int(time.time())).encode()
    return [
        b"".join((p[0], repr(0.5 + (seed * 100_000 + i) * 1e-9).encode(), p[1], now, p[2]))
        for i in range(count)
    ]


async def sequential(conn: Client, bodies: list[bytes], path: str = "/eventRcv") -> list[int]:
    """Send one at a time; latencies in microseconds (every answer must be 200)."""
    conn.head = conn.head.replace(b"POST /eventRcv ", f"POST {path} ".encode())
    out = []
    for body in bodies:
        start = time.perf_counter_ns()
        status, payload = await conn.request(body)
        out.append((time.perf_counter_ns() - start) // 1000)
        if status != 200:
            raise SystemExit(f"{path}: answered {status}: {payload[:200]!r}")
    conn.head = conn.head.replace(f"POST {path} ".encode(), b"POST /eventRcv ")
    return out


async def grouped(port: int, bodies: list[bytes], width: int) -> list[int]:
    """``width`` connections sending at once, each its share one at a time."""
    conns = [client(port) for _ in range(width)]
    await asyncio.gather(*(sequential(c, bodies[i::width]) for i, c in enumerate(conns)))
    for conn in conns:
        conn.close()
    return []


async def phase(edged: rb.Edged, run: Awaitable[list[int] | None]) -> dict[str, Any]:
    """Await one workload; wall time, bytes written, commits and records it caused."""
    before, stats = written(edged.proc.pid), edged.store_stats()
    start = time.perf_counter()
    result = await run
    wall = time.perf_counter() - start
    after = edged.store_stats()
    return {
        "wall_s": wall,
        "bytes": written(edged.proc.pid) - before,
        "commits": after["commits"] - stats["commits"],
        "records": after["records"] - stats["records"],
        "latencies_us": result or [],
    }


async def measure(edged: rb.Edged, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The four workloads against one running edged."""
    conn = client(edged.port)
    n, tag = args.records, f"sd{seed}"
    await sequential(conn, pushes(f"{tag}-warm", args.warmup))
    bodies = pushes(tag, n)
    new = await phase(edged, sequential(conn, bodies))
    dup = await phase(edged, sequential(conn, bodies))
    group = await phase(edged, grouped(edged.port, pushes(f"{tag}-g", n), 7))
    auth = await phase(edged, sequential(conn, auths(args.auths, seed), "/auth"))
    conn.close()
    lat = sorted(auth["latencies_us"])
    return {
        "records_per_s": n / new["wall_s"],
        "kib_per_record": new["bytes"] / n / 1024,
        "duplicates_per_s": n / dup["wall_s"],
        "kib_per_duplicate": dup["bytes"] / n / 1024,
        "duplicate_commits": dup["commits"],
        "group_kib_per_record": group["bytes"] / n / 1024,
        "group_batch": n / group["commits"] if group["commits"] else float("nan"),
        "auth_p50_ms": rb.percentile(lat, 50) / 1000,
        "auth_p99_ms": rb.percentile(lat, 99) / 1000,
    }


def run_all(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Every (code, delay) pair, alternated over the rounds."""
    lib = build_slowsync(tmp)
    codes = [("this", ROOT)] + ([("base", Path(args.base).resolve())] if args.base else [])
    out = []
    seed = 0
    for rnd in range(args.rounds):
        order = codes if rnd % 2 == 0 else codes[::-1]
        for delay in args.delays:
            for name, code in order:
                seed += 1
                with daemon(tmp, code, lib, delay) as edged:
                    figures = asyncio.run(measure(edged, args, seed))
                figures.update(code=name, delay_ms=delay, round=rnd + 1)
                print(f"  round {rnd + 1} {name:4} fsync +{delay:g} ms: done", file=sys.stderr)
                out.append(figures)
    return out


def merged(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mean of each figure over the rounds, per code and delay."""
    keys: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in runs:
        keys.setdefault((r["code"], r["delay_ms"]), []).append(r)
    out = []
    for (code, delay), rs in keys.items():
        row: dict[str, Any] = {"code": code, "delay_ms": delay, "rounds": len(rs)}
        for k, v in rs[0].items():
            if isinstance(v, float) and k != "delay_ms":
                row[k] = sum(r[k] for r in rs) / len(rs)
        out.append(row)
    return out


def report(rows: list[dict[str, Any]], args: argparse.Namespace, cond: dict[str, Any]) -> str:
    """The figures as a table, with the physical floor of one commit per new record."""
    lines = [
        f"machine: {cond['cores']} cores, {cond['cpu']}, load average {' '.join(cond['loadavg'])}",
        f"python {cond['python']}, sqlite {cond['sqlite']}; {args.records} records, "
        f"{args.auths} remote-auth requests per run, {args.rounds} round(s)",
        "",
        f"{'code':5} {'fsync':>6} {'rec/s':>7} {'floor':>6} {'KiB/rec':>8} {'dup/s':>7} "
        f"{'KiB/dup':>8} {'KiB/rec@7':>10} {'batch':>6} {'auth p50':>9} {'auth p99':>9}",
    ]
    for r in sorted(rows, key=lambda r: (-r["delay_ms"], r["code"])):
        floor = f"{1000 / r['delay_ms']:.0f}" if r["delay_ms"] else "-"
        lines.append(
            f"{r['code']:5} {'+' + format(r['delay_ms'], 'g') + 'ms':>6} "
            f"{r['records_per_s']:7.0f} {floor:>6} {r['kib_per_record']:8.1f} "
            f"{r['duplicates_per_s']:7.0f} {r['kib_per_duplicate']:8.2f} "
            f"{r['group_kib_per_record']:10.1f} {r['group_batch']:6.1f} "
            f"{r['auth_p50_ms']:8.2f}ms {r['auth_p99_ms']:8.2f}ms"
        )
    lines += [
        "",
        "floor: one commit per new record sent one at a time; a record cannot be acknowledged",
        "faster than the card's fsync (records/s <= 1000 / fsync ms).",
    ]
    for r in rows:
        if r["code"] == "this":
            kib = r["kib_per_record"]
            met = "met" if kib <= TARGET_KIB_PER_RECORD else "NOT met"
            lines.append(
                f"target bytes per record (fsync +{r['delay_ms']:g} ms): {kib:.1f} KiB <= "
                f"{TARGET_KIB_PER_RECORD:.0f} KiB -> {met}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=500, help="records per workload and run")
    p.add_argument("--warmup", type=int, default=200, help="records before measuring")
    p.add_argument("--auths", type=int, default=500, help="remote-auth requests per run")
    p.add_argument("--rounds", type=int, default=1, help="alternations of the codes")
    p.add_argument("--delays", type=float, nargs="+", default=[5.0, 0.0], help="fsync delays, ms")
    p.add_argument("--base", metavar="DIR", help="also run the code in DIR (alternately)")
    p.add_argument("--json", metavar="FILE", help="also write all figures as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    args = parse_args(argv)
    cond = rb.conditions()
    with tempfile.TemporaryDirectory(prefix="edged-sdcard-", dir="/var/tmp") as tmp:
        os.chdir(tmp)  # ``python -m`` puts the working directory first on sys.path
        runs = run_all(args, Path(tmp))
    rows = merged(runs)
    cond["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    print(report(rows, args, cond))
    if args.json:
        Path(args.json).write_text(json.dumps({"conditions": cond, "runs": runs, "rows": rows}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
