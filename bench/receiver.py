"""Benchmark the receiver: a real edged against a bare starlette-on-hypercorn endpoint.

``make bench`` (or ``.venv/bin/python bench/receiver.py [--json FILE]``) starts, in one run:

- a real edged (``python -m edged run``) on loopback, state in a temporary directory, one
  configured terminal and one imported person, so remote-auth answers are real grants after a
  real ``synchronous=FULL`` commit;
- the bare endpoint (bench/bare_app.py): parses the JSON body, returns a constant;

and drives both with the same load from a separate generator process (bench/loadgen.py, 8
keep-alive connections): remote-auth requests of about 1 KB and pushes with a 60 KB base64
snapshot. Servers alternate (edged, bare, edged, bare, ...) so machine noise falls on both.

It prints p50/p99 latency and throughput of both, the ratios edged/bare, edged's resident memory
after 10,000 stored events (the daemon's, plus the private memory of its snapshot writer process)
and the group-commit batch sizes. CPU/req counts the daemon and its writer process. Figures, not
a pass/fail test: the targets are shown as met or not met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
SERIAL = "BENCH0000000001"
USER_ID = "e-4711"
WORKLOADS = ("auth", "push")
SERVERS = ("edged", "bare")
PATHS = {"auth": "/auth", "push": "/eventRcv"}

TARGET_AUTH_P99_MS = 10.0
TARGET_PUSH_RATIO = 0.5
TARGET_RSS_MB = 60.0
RSS_AFTER_EVENTS = 10_000

CONFIG = """
[site]
name = "benchmark"
timezone = "UTC"

[receiver]
listen = ["127.0.0.1:{port}"]
allowed_networks = ["127.0.0.0/8"]

[admin]
listen = ["127.0.0.1:{admin_port}"]
token = "bench-token"

[storage]
state_dir = "{state}"

[logging]
level = "warning"

[[terminals]]
name = "bench-door"
serial = "{serial}"
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Wait until ``port`` accepts connections; fail early if the process died."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not listen on {port} within 20 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then wait (SIGKILL after 10 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Edged:
    """A running edged in a subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int

    def store_stats(self) -> dict[str, Any]:
        """The store section of the admin /readyz."""
        url = f"http://127.0.0.1:{self.admin_port}/readyz"
        return dict(httpx.get(url, timeout=10).json()["checks"]["store"])

    def memory_kb(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) of the daemon; VmRSS and private memory (its own pages, not
        the interpreter's shared libraries the daemon's VmRSS already counts) of its snapshot
        writer process; in KiB."""
        out = status_kb(self.proc.pid, ("VmRSS", "VmHWM"))
        writers = children(self.proc.pid)
        out["writer"] = sum(status_kb(c, ("VmRSS",)).get("VmRSS", 0) for c in writers)
        out["writer_private"] = sum(private_kb(c) for c in writers)
        return out


def private_kb(pid: int) -> int:
    """Private_Clean + Private_Dirty of a process (its unshared pages), in KiB."""
    total = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Private_Clean", "Private_Dirty"):
                total += int(value.split()[0])
    return total


def status_kb(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/PID/status given in kB (empty if the process is gone)."""
    out: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (edged's snapshot writer)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


@contextmanager
def edged_server(tmp: Path, env: dict[str, str] | None = None) -> Iterator[Edged]:
    """Configure, load one person, start edged (``env`` added to its environment); stop it."""
    port, admin_port = free_port(), free_port()
    cfg = tmp / "edged.toml"
    cfg.write_text(
        CONFIG.format(port=port, admin_port=admin_port, state=tmp / "state", serial=SERIAL)
    )
    people = tmp / "people.json"
    people.write_text(
        json.dumps(
            {
                "people": [
                    {"id": "p-1", "name": "Ann Example", "user_id": USER_ID, "groups": "staff"}
                ],
                # the terminal has no door configured: its name is its door
                "permissions": [{"group": "staff", "door": "bench-door"}],
            }
        )
    )
    edged = [sys.executable, "-m", "edged"]
    environ = {**os.environ, **(env or {})}
    subprocess.run(
        [*edged, "people", "import", str(people), "-c", str(cfg)],
        check=True,
        env=environ,
        stdout=subprocess.DEVNULL,
    )
    log = tmp / "edged.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([*edged, "run", "-c", str(cfg)], stderr=err, env=environ)
    try:
        wait_listening(port, proc, "edged", log)
        wait_listening(admin_port, proc, "edged admin", log)
        yield Edged(proc, port, admin_port)
    finally:
        stop(proc)


@contextmanager
def bare_server(tmp: Path) -> Iterator[tuple[int, int]]:
    """Start the bare endpoint; yields its port and process id."""
    port = free_port()
    log = tmp / "bare.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(HERE / "bare_app.py"), str(port)], stderr=err)
    try:
        wait_listening(port, proc, "bare endpoint", log)
        yield port, proc.pid
    finally:
        stop(proc)


def drive(port: int, workload: str, args: argparse.Namespace, tag: int) -> dict[str, Any]:
    """One warm-up plus measured run of the load generator in its own process."""
    opts = {
        "host": "127.0.0.1",
        "port": port,
        "path": PATHS[workload],
        "workload": workload,
        "requests": args.requests,
        "warmup": args.warmup,
        "duration": args.duration,
        "concurrency": args.concurrency,
        "serial": SERIAL,
        "user_id": USER_ID,
        "tag": tag,
    }
    out = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), json.dumps(opts)],
        check=True,
        capture_output=True,
        timeout=args.duration * 2 + 60,
    )
    return dict(json.loads(out.stdout))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, all its threads and its live child processes
    (edged's snapshot writer), in seconds."""
    ticks = 0
    for proc in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{proc}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


@dataclass
class Series:
    """All measured runs of one server under one workload."""

    latencies_us: list[int] = field(default_factory=list)
    requests: int = 0
    wall_s: float = 0.0
    gen_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    granted: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)

    def add(self, run: dict[str, Any]) -> None:
        lat = run["latencies_us"]
        self.latencies_us += lat
        self.requests += len(lat)
        self.wall_s += run["wall_s"]
        self.gen_cpu_s += run["cpu_s"]
        self.server_cpu_s += run["server_cpu_s"]
        self.sent += run["sent"]
        self.granted += run["granted"]
        for code, count in run["statuses"].items():
            self.statuses[code] = self.statuses.get(code, 0) + count
        ordered = sorted(lat)
        self.rounds.append(
            {
                "p50_ms": percentile(ordered, 50) / 1000,
                "p99_ms": percentile(ordered, 99) / 1000,
                "rps": len(lat) / run["wall_s"],
                "gen_cpu": run["cpu_s"] / run["wall_s"],
            }
        )

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_us)
        return {
            "requests": self.requests,
            "p50_ms": percentile(ordered, 50) / 1000,
            "p99_ms": percentile(ordered, 99) / 1000,
            "max_ms": (ordered[-1] / 1000) if ordered else float("nan"),
            "rps": self.requests / self.wall_s if self.wall_s else 0.0,
            "gen_cpu": self.gen_cpu_s / self.wall_s if self.wall_s else 0.0,
            "server_cpu_ms_per_request": 1000 * self.server_cpu_s / self.sent if self.sent else 0.0,
            "statuses": self.statuses,
            "granted": self.granted,
            "rounds": self.rounds,
        }


EDGED_CPU, OTHERS_CPU = 0, 1  # --pin: edged's core, and the one for everything else


def pin_others() -> None:
    """``--pin``: this process and whatever it starts from now on (the simulated terminal, the
    prober) on one core, so that edged's core is its own, as on a site where each terminal is a
    device of its own. Call before anything else starts."""
    os.sched_setaffinity(0, {OTHERS_CPU})


def pin_edged() -> None:
    """``--pin``: in the daemon's child process before it runs (``preexec_fn``): edged's core."""
    os.sched_setaffinity(0, {EDGED_CPU})


def conditions() -> dict[str, Any]:
    """The machine and its load right now."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.partition(":")[2].strip()
            break
    versions = {}
    for name in ("starlette", "hypercorn", "h11"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "?"
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "python": platform.python_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        **versions,
    }


def start_profiler(
    edged: Edged, out: str | None, only: str | None
) -> subprocess.Popen[bytes] | None:
    """py-spy sampling edged (all threads, native frames off) while the rounds run."""
    if not out:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    fmt = "speedscope" if out.endswith(".json") else "raw" if out.endswith(".txt") else "flamegraph"
    cmd = [str(spy), "record", "--pid", str(edged.proc.pid), "--threads", "--rate", "250"]
    cmd += os.environ.get("PYSPY_ARGS", "").split()
    proc = subprocess.Popen([*cmd, "--format", fmt, "--output", out, "--nonblocking"])
    time.sleep(1.0)
    return proc


def fill(edged: Edged, target: int, args: argparse.Namespace) -> int:
    """Push more records (unmeasured) until edged has stored ``target``; returns the count."""
    tag = 1000
    while (stored := int(edged.store_stats()["records"])) < target:
        need = target - stored
        ns = argparse.Namespace(**{**vars(args), "requests": need, "warmup": 0})
        drive(edged.port, "push", ns, tag)
        tag += 1
    return stored


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start both servers, alternate them over the rounds, read edged's memory at the end."""
    workloads = [w for w in WORKLOADS if args.profile_only in (None, w)]
    series = {(s, w): Series() for s in SERVERS for w in WORKLOADS}
    batches: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    with edged_server(tmp) as edged, bare_server(tmp) as (bare_port, bare_pid):
        rss_start = edged.memory_kb()
        profiler = start_profiler(edged, args.profile, args.profile_only)
        ports = {"edged": edged.port, "bare": bare_port}
        pids = {"edged": edged.proc.pid, "bare": bare_pid}
        tag = 0
        for rnd in range(args.rounds):
            for workload in workloads:
                for server in SERVERS:
                    before = edged.store_stats() if server == "edged" else {}
                    tag += 1
                    cpu = cpu_seconds(pids[server])
                    run = drive(ports[server], workload, args, tag)
                    run["server_cpu_s"] = cpu_seconds(pids[server]) - cpu
                    run["sent"] = args.requests + args.warmup
                    series[(server, workload)].add(run)
                    if before:
                        after = edged.store_stats()
                        commits = after["commits"] - before["commits"]
                        if commits:
                            batches[workload].append(
                                (after["records"] - before["records"]) / commits
                            )
                    print(
                        f"  round {rnd + 1} {workload:4} {server:5}: "
                        f"{series[(server, workload)].rounds[-1]['rps']:7.0f} req/s",
                        file=sys.stderr,
                    )
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        stored = fill(edged, RSS_AFTER_EVENTS, args)
        memory = edged.memory_kb()
        store = edged.store_stats()
    return {
        "workloads": workloads,
        "results": {f"{s}/{w}": series[(s, w)].summary() for s, w in series if w in workloads},
        "batch_mean": {w: sum(b) / len(b) if b else None for w, b in batches.items()},
        "stored": stored,
        "duplicates": store["duplicates"],
        "rss_start_kb": rss_start.get("VmRSS"),
        "rss_kb": memory.get("VmRSS"),
        "rss_peak_kb": memory.get("VmHWM"),
        "rss_writer_kb": memory.get("writer", 0),
        "private_writer_kb": memory.get("writer_private", 0),
    }


def report(data: dict[str, Any]) -> str:
    """The human-readable figures."""
    res = data["results"]
    cond = data["conditions"]
    lines = [
        f"machine: {cond['cores']} cores ({cond['usable_cores']} usable), {cond['cpu']}, "
        f"load average before {' '.join(cond['loadavg'])}, after "
        f"{' '.join(data['loadavg_after'])}",
        f"python {cond['python']}, sqlite {cond['sqlite']}, starlette {cond['starlette']}, "
        f"hypercorn {cond['hypercorn']}, h11 {cond['h11']}",
        f"load: {data['args']['concurrency']} keep-alive clients, {data['args']['rounds']} "
        f"rounds x {data['args']['requests']} requests per server and workload "
        f"(+{data['args']['warmup']} warm-up), servers alternated",
        "",
        f"{'workload':9} {'server':6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8} "
        f"{'CPU/req':>8} {'gen CPU':>8}  statuses",
    ]
    for w in data["workloads"]:
        for s in SERVERS:
            r = res[f"{s}/{w}"]
            extra = f", granted {r['granted']}" if w == "auth" and s == "edged" else ""
            lines.append(
                f"{w:9} {s:6} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['max_ms']:8.1f} "
                f"{r['rps']:8.0f} {r['server_cpu_ms_per_request']:6.2f}ms {r['gen_cpu']:8.0%}  "
                f"{r['statuses']}{extra}"
            )
    lines.append("")
    for w in data["workloads"]:
        e, b = res[f"edged/{w}"], res[f"bare/{w}"]
        batch = data["batch_mean"][w]
        lines.append(
            f"ratio edged/bare, {w}: p50 x{e['p50_ms'] / b['p50_ms']:.2f}, "
            f"p99 x{e['p99_ms'] / b['p99_ms']:.2f}, throughput {e['rps'] / b['rps']:.0%}"
            + (f"; mean group-commit batch {batch:.1f} records" if batch else "")
        )
    mb = data["rss_kb"] / 1024
    writer, own = data["rss_writer_kb"] / 1024, data["private_writer_kb"] / 1024
    lines += [
        f"edged memory: VmRSS {mb:.1f} MiB after {data['stored']} stored events "
        f"({data['duplicates']} duplicates); at start {data['rss_start_kb'] / 1024:.1f} MiB, "
        f"peak {data['rss_peak_kb'] / 1024:.1f} MiB",
        f"snapshot writer process: VmRSS {writer:.1f} MiB, of it private {own:.1f} MiB; "
        f"daemon + writer: {mb + own:.1f} MiB resident ({mb + writer:.1f} MiB counting the "
        "shared interpreter twice)",
        "",
    ]
    for name, met, text in targets(data):
        lines.append(f"target {name}: {text} -> {'met' if met else 'NOT met'}")
    gen = max(r["gen_cpu"] for r in res.values())
    lines.append(
        f"load generator: at most {gen:.0%} of one core in any series "
        f"({'not the bottleneck' if gen < 0.7 else 'may limit the bare endpoint'})"
    )
    return "\n".join(lines)


def targets(data: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(name, met, description) for the three targets."""
    res = data["results"]
    out = []
    if "auth" in data["workloads"]:
        p99 = res["edged/auth"]["p99_ms"]
        text = f"{p99:.2f} ms <= {TARGET_AUTH_P99_MS} ms"
        out.append(("remote-auth p99", p99 <= TARGET_AUTH_P99_MS, text))
    if "push" in data["workloads"]:
        ratio = res["edged/push"]["rps"] / res["bare/push"]["rps"]
        out.append(("push throughput", ratio >= TARGET_PUSH_RATIO, f"{ratio:.0%} of bare >= 50%"))
    mb = (data["rss_kb"] + data["private_writer_kb"]) / 1024  # the daemon and its writer
    out.append(("memory", mb <= TARGET_RSS_MB, f"{mb:.1f} MiB <= {TARGET_RSS_MB:.0f} MiB"))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000, help="measured requests per run")
    p.add_argument("--warmup", type=int, default=300, help="warm-up requests per run")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two servers")
    p.add_argument("--duration", type=float, default=60.0, help="time bound per run, seconds")
    p.add_argument("--concurrency", type=int, default=8, help="keep-alive client connections")
    p.add_argument("--json", metavar="FILE", help="also write all figures as JSON")
    p.add_argument(
        "--profile",
        metavar="FILE",
        help="sample edged with py-spy (pip install py-spy) during the rounds: .svg flame graph, "
        ".txt collapsed stacks, .json speedscope; extra py-spy options in $PYSPY_ARGS "
        "(e.g. --gil: only the thread holding the GIL)",
    )
    p.add_argument("--profile-only", choices=WORKLOADS, help="run only this workload")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    args = parse_args(argv)
    cond = conditions()
    with tempfile.TemporaryDirectory(prefix="edged-bench-") as tmp:
        data = measure(args, Path(tmp))
    data["conditions"] = cond
    data["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    data["args"] = {k: v for k, v in vars(args).items() if k != "json"}
    data["targets"] = {name: {"met": met, "text": text} for name, met, text in targets(data)}
    print(report(data))
    if args.json:
        for r in data["results"].values():
            r.pop("latencies_us", None)
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
