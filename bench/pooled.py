"""Live remote-auth percentiles pooled over several runs' ``--json`` files, judged by Step 7.

A back-fill of 15 s or a people sync of 15 s gives about 150 live probes, so one run's p99 is
its second-slowest answer, and the idle p99 it is compared with moves by a factor of two from
run to run. Pooling every probe of several runs (each run's phases split as that run split
them) gives a p99 that means something. Reads what ``bench/replay.py --json FILE`` and
``bench/peoplesync.py --live --json FILE`` wrote, prints each run and the pool, and judges the
pool against the target: live p99 during the load <= 2x idle and <= 20 ms.

    .venv/bin/python bench/pooled.py RUN.json [RUN.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import receiver as rb  # bench/receiver.py: the benches' nearest-rank percentile
import replay  # bench/replay.py: its phases and its targets

IDLE = "idle"


def phases_of(data: dict[str, Any]) -> dict[str, list[int]]:
    """One run's live samples in microseconds, by phase, split as the run itself split them."""
    if "phases_us" in data:  # bench/peoplesync.py --live
        found = data["phases_us"]
        return {"people sync": list(found["during the sync"]), IDLE: list(found["idle after it"])}
    marks = data["marks"]  # bench/replay.py
    phases, _ = replay.split(data["probes"], *marks["backfill"], marks["drained"])
    phases[IDLE] = phases.pop(IDLE)  # the loads first, as for the people sync
    return {name: [int(ms * 1000) for ms in values] for name, values in phases.items()}


def p(values: list[int], q: float) -> float:
    """Nearest-rank percentile in milliseconds."""
    return rb.percentile(sorted(values), q) / 1000


def line(name: str, phases: dict[str, list[int]]) -> str:
    """One row: each phase's n and p50/p99, and the ratio of each load's p99 to idle."""
    idle = p(phases[IDLE], 99)
    cells = []
    for phase, values in phases.items():
        cell = f"{phase} n={len(values)} {p(values, 50):.1f}/{p(values, 99):.1f} ms"
        if phase != IDLE and values:
            cell += f" ({p(values, 99) / idle:.2f}x)"
        cells.append(cell)
    return f"{name}: " + "; ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--json files of one kind of run")
    args = parser.parse_args()
    pool: dict[str, list[int]] = {}
    for path in args.runs:
        try:
            phases = phases_of(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"{path}: not a --json file of bench/replay.py or bench/peoplesync.py ({exc})")
            return 65
        if pool and pool.keys() != phases.keys():
            print(f"{path}: a different benchmark from the files before it")
            return 65
        for phase, values in phases.items():
            pool.setdefault(phase, []).extend(values)
        print(line(path.name, phases))
    print(line(f"pooled over {len(args.runs)} runs", pool))
    idle, ratio, limit = p(pool[IDLE], 99), replay.TARGET_P99_RATIO, replay.TARGET_P99_MS
    for phase, values in pool.items():
        if phase == IDLE or not values:
            continue
        worst = p(values, 99)
        bounds = ((f"{ratio:g} x idle {idle:.2f} ms", ratio * idle), (f"{limit:g} ms", limit))
        for label, bound in bounds:
            verdict = "met" if worst <= bound else "not met"
            print(f"target pooled live p99 during {phase} {worst:.2f} ms <= {label} -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
