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
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--face-bytes", type=int, default=20_000)
    parser.add_argument("--firmware", default="1.3.0", choices=["1.0", "1.1", "1.2.1", "1.3.0"])
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument(
        "--heap", action="store_true", help="also trace the Python heap (slower, more RSS)"
    )
    args = parser.parse_args()

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
