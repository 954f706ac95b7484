"""People on a terminal: the first sync of N people with faces, then one change, and memory.

A simulated terminal (firmware 1.3.0 by default: datasync info and /v2 batches) runs over HTTPS
on loopback in a process of its own, so its library (every avatar, in memory) is not counted.
A second child process imports ``--people`` people with a ``--face-bytes`` JPEG each (CSV with
face paths: the photos are written under the state directory). This process then runs one
``PeopleSync.sync_once`` (the first sync: every rule, group and user written), a second one (in
step: nothing written), one after renaming one person (one user written), and prints the time of
each, people per second, where the first sync's time went (reading the model, reading the
terminal, writing), this process's peak RSS before (after the login) and after the first sync,
and with ``--heap`` the peak of the Python heap during it (tracemalloc: slower, and its own
bookkeeping adds to the RSS).

    .venv/bin/python bench/peoplesync.py [--people 10000] [--face-bytes 20000] [--heap]

``--live`` measures the remote-auth path of a running daemon instead: ``python -m edged run``
(this tree) with ``[people_sync]`` on and the simulated terminal managed, so that the daemon
itself runs the first sync of the imported people as soon as it has registered the terminal;
another process sends remote-auth requests at ``--rate`` per second (``bench/replay.py``'s
prober) from the start, through the sync and for ``--idle`` seconds after it. It prints p50/p99
during the sync and idle, and their ratio; ``--json FILE`` also writes every sample (for
percentiles pooled over several runs, since a sync of 15 s gives only 150 probes).

    .venv/bin/python bench/peoplesync.py --live [--people 10000] [--rate 10] [--idle 30]
        [--code DIR] [--json FILE] [--pin]

``--pin`` puts the daemon on core 0 and the simulated terminal and the prober on core 1, as on a
site where the terminal is a device of its own.

``--code DIR`` runs the daemon from another checkout's code (``PYTHONPATH=DIR``), so that the
code before a change and after it can be measured alternately in the same minutes; the
terminal, the import and the prober stay this tree's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import receiver as rb  # bench/receiver.py: ports, start and stop, percentiles

HERE = Path(__file__).resolve().parent

SERIAL = "BENCH000000000009"


def run_sim(firmware: str, folder: str, ready: Any, stop: Any) -> None:
    """The simulated terminal's process: start, report port and fingerprint, serve until told."""
    from edged.sim.terminal import SimSettings, SimulatedTerminal

    async def main() -> None:
        sim = SimulatedTerminal(SimSettings(serial=SERIAL, firmware=firmware, cert_dir=folder))
        await sim.start()
        ready.put((sim.port, sim.fingerprint))
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await sim.stop()

    asyncio.run(main())


def run_import(state: str, people: int, face_bytes: int) -> None:
    """The import's process: N people in one CSV, each with a photo of its own beside it."""
    from zoneinfo import ZoneInfo

    from edged.access import people as access
    from edged.access.faces import FaceStore
    from edged.store import events as store

    folder = Path(state) / "import"
    (folder / "faces").mkdir(parents=True)
    rows = ["id,name,user_id,groups,face"]
    for n in range(people):
        body = (f"face-{n}-".encode() * (face_bytes // 8 + 1))[: face_bytes - 6]
        (folder / "faces" / f"{n}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + body + b"\xff\xd9")
        rows.append(f"e-{n},Person {n},{100000 + n},staff,faces/{n}.jpg")
    (folder / "people.csv").write_text("\n".join(rows) + "\n")
    conn = store.open_connection(Path(state) / "edged.db")
    try:
        doc = access.load_file(folder / "people.csv", ZoneInfo("UTC"))
        access.apply_document(conn, doc, replace=True, faces=FaceStore(Path(state) / "faces"))
        permission = access.parse_document(
            {"permissions": [{"group": "staff", "door": "bench"}]}, ZoneInfo("UTC")
        )
        access.apply_document(conn, permission, replace=False)
    finally:
        conn.close()


def peak_mb() -> float:
    """This process's peak resident set so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(cfg: Any, state: Path, heap_too: bool) -> None:
    """The three syncs, timed, with the first one's phases."""
    from edged.access import people as access
    from edged.store import events as store
    from edged.terminals import peoplesync

    db = store.Store(cfg.storage.database_path)
    sync = peoplesync.PeopleSync(cfg, cfg.terminals[0], db)
    phases: dict[str, float] = {}
    for name in ("_desired", "_held", "_write"):
        original = getattr(sync, name)

        async def timed(*args: Any, _original: Any = original, _name: str = name) -> Any:
            start = time.perf_counter()
            try:
                return await _original(*args)
            finally:
                phases[_name] = phases.get(_name, 0.0) + time.perf_counter() - start

        setattr(sync, name, timed)
    client = await sync._client()
    await client.device_info()  # TLS, the login: not part of what a sync holds
    before = peak_mb()
    if heap_too:
        tracemalloc.start()
    start = time.perf_counter()
    first = await sync.sync_once()
    took = time.perf_counter() - start
    heap = tracemalloc.get_traced_memory()[1] / 1e6 if heap_too else 0.0
    tracemalloc.stop()
    after = peak_mb()
    print(
        f"first sync: {first.written} writes, {first.desired} people in {took:.1f} s "
        f"({first.desired / took:.0f} people/s), {len(first.errors)} refused"
    )
    print("  where: " + ", ".join(f"{k.strip('_')} {v:.1f} s" for k, v in phases.items()))
    print(
        f"  peak RSS of the syncing process: {before:.0f} MB before, {after:.0f} MB after "
        f"(+{after - before:.0f} MB" + (f"; Python heap peak {heap:.0f} MB)" if heap_too else ")")
    )
    start = time.perf_counter()
    again = await sync.sync_once()
    print(f"in step: {again.written} writes in {time.perf_counter() - start:.2f} s")
    conn = store.open_connection(cfg.storage.database_path)
    try:
        from zoneinfo import ZoneInfo

        one = access.parse_document(
            {"people": [{"id": "e-7", "name": "Renamed", "user_id": "100007"}]}, ZoneInfo("UTC")
        )
        access.apply_document(conn, one, replace=False)
    finally:
        conn.close()
    start = time.perf_counter()
    changed = await sync.sync_once()
    print(f"one change: {changed.written} write in {time.perf_counter() - start:.2f} s")
    if sync.client is not None:
        await sync.client.aclose()
    db.close()


LIVE = """
[[terminals]]
name = "bench"
serial = "{serial}"
host = "127.0.0.1"
port = {sim_port}
password = "admin-pass"
tls_fingerprint = "{fingerprint}"

[gateway]
public_url = "http://127.0.0.1:{port}"

[people_sync]
enabled = true
batch_size = {batch_size}
"""


def synced(db: Path, people: int) -> int | None:
    """What the daemon's first people sync of the terminal wrote, once it has them all in step
    (None before)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute(
                "SELECT desired, in_step, written, progress FROM terminal_people_sync "
                "WHERE serial = ?",
                (SERIAL,),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    if row is None or row[3] or row[0] < people or row[1] != row[0]:
        return None
    return int(row[2])


def live(args: argparse.Namespace, state: Path, port_fp: tuple[int, str]) -> None:
    """A running daemon syncing the people, with remote-auth probes beside it."""
    port, admin_port = rb.free_port(), rb.free_port()
    cfg = state.parent / "edged.toml"
    text = rb.CONFIG.format(port=port, admin_port=admin_port, state=state, serial="PROBE")
    text = text[: text.rindex("[[terminals]]")]  # its terminal: the managed one below
    cfg.write_text(
        text
        + LIVE.format(
            serial=SERIAL,
            sim_port=port_fp[0],
            fingerprint=port_fp[1],
            port=port,
            batch_size=args.batch_size,
        )
    )
    code = Path(args.code).resolve() if args.code else HERE.parent
    env = {**os.environ, "PYTHONPATH": str(code)}
    stop = state.parent / "stop-probe"
    log = state.parent / "edged.log"
    launched = time.time()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "-c", str(cfg)],
            stderr=err,
            env=env,
            cwd=state.parent,
            preexec_fn=rb.pin_edged if args.pin else None,
        )
    try:
        rb.wait_listening(port, proc, "edged", log)
        started = time.time()
        opts = {"port": port, "rate": args.rate, "stop": str(stop), "serial": SERIAL}
        opts["user"] = "100001"  # Person 1: granted at the terminal's door
        prober = subprocess.Popen(
            [sys.executable, str(HERE / "replay.py"), "--probe", json.dumps(opts)],
            stdout=subprocess.PIPE,
        )
        done, written = None, 0
        while done is None and time.time() - started < args.limit:
            time.sleep(0.1)
            count = synced(state / "edged.db", args.people)
            if count is not None:
                done, written = time.time(), count  # seen within 0.1 s of its end
        time.sleep(args.idle)
        stop.touch()
        out, _ = prober.communicate(timeout=60)
    finally:
        rb.stop(proc)
    if done is None:
        print(f"the first sync did not end within {args.limit:g} s; see {log}")
        return
    ended = done
    phases: dict[str, list[int]] = {"during the sync": [], "idle after it": []}
    failed = 0
    for sent, ms, status in json.loads(out):
        if status != 200:
            failed += 1
        elif sent < ended:
            phases["during the sync"].append(int(ms * 1000))
        elif sent >= ended + 1.0:
            phases["idle after it"].append(int(ms * 1000))
    print(
        f"the daemon's first sync: {written} writes, ended {ended - launched:.1f} s after edged "
        f"started (listening after {started - launched:.1f} s); live remote-auth "
        f"{args.rate:g}/s from another process, {failed} failed; code {code}"
        + ("; edged on core 0, the terminal and the prober on core 1" if args.pin else "")
    )
    p99: dict[str, float] = {}
    for name, values in phases.items():
        values.sort()
        p50, p99[name] = rb.percentile(values, 50) / 1000, rb.percentile(values, 99) / 1000
        print(f"  {name:16} n={len(values):4}  p50 {p50:6.2f} ms  p99 {p99[name]:6.2f} ms")
    ratio = p99["during the sync"] / p99["idle after it"]
    print(f"  p99 during the sync / idle: {ratio:.2f}")
    if args.json:  # every sample, for percentiles pooled over several runs
        figures = {"code": str(code), "sync_s": ended - launched, "phases_us": phases}
        Path(args.json).write_text(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--face-bytes", type=int, default=20_000)
    parser.add_argument("--firmware", default="1.3.0", choices=["1.0", "1.1", "1.2.1", "1.3.0"])
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument(
        "--heap", action="store_true", help="also trace the Python heap (slower, more RSS)"
    )
    parser.add_argument("--live", action="store_true", help="remote-auth p99 during a sync")
    parser.add_argument("--rate", type=float, default=10.0, help="--live: requests per second")
    parser.add_argument("--idle", type=float, default=30.0, help="--live: seconds after it")
    parser.add_argument("--limit", type=float, default=600.0, help="--live: give up after, s")
    parser.add_argument("--code", help="--live: run the daemon from this checkout's code")
    parser.add_argument("--json", metavar="FILE", help="--live: also write every sample")
    parser.add_argument("--pin", action="store_true", help="--live: edged on core 0, rest core 1")
    args = parser.parse_args()
    if args.pin:
        rb.pin_others()

    from edged import config
    from edged.config.schema import PeopleSyncConfig

    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "state"
        state.mkdir()
        ready, stop = spawn.Queue(), spawn.Event()
        sim = spawn.Process(target=run_sim, args=(args.firmware, folder, ready, stop))
        sim.start()
        try:
            port, fingerprint = ready.get(timeout=60)
            start = time.perf_counter()
            importer = spawn.Process(
                target=run_import, args=(str(state), args.people, args.face_bytes)
            )
            importer.start()
            importer.join()
            print(
                f"import of {args.people} people with {args.face_bytes}-byte faces: "
                f"{time.perf_counter() - start:.1f} s"
            )
            if args.live:
                live(args, state, (port, fingerprint))
                return
            cfg = config.parse(
                f'[storage]\nstate_dir = "{state}"\n[gateway]\npublic_url = "http://127.0.0.1:9"\n'
                f'[[terminals]]\nname = "bench"\nserial = "{SERIAL}"\nhost = "127.0.0.1"\n'
                f'port = {port}\npassword = "admin-pass"\ntls_fingerprint = "{fingerprint}"\n',
                "bench.toml",
            )
            cfg = dataclasses.replace(
                cfg, people_sync=PeopleSyncConfig(enabled=True, batch_size=args.batch_size)
            )
            asyncio.run(measure(cfg, state, args.heap))
        finally:
            stop.set()
            sim.join(30)
            if sim.is_alive():
                sim.terminate()


if __name__ == "__main__":
    main()
