"""The benchmarks still run: every one answers --help, so its imports of edged resolve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.project.helpers import ROOT

BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if "argparse" in p.read_text())


def test_the_benchmarks_are_found() -> None:
    assert {"receiver.py", "replay.py", "sdcard.py", "upstream.py"} <= {p.name for p in BENCHES}


@pytest.mark.parametrize("bench", BENCHES, ids=lambda p: p.name)
def test_a_benchmark_answers_help(bench: object) -> None:
    done = subprocess.run(
        [sys.executable, str(bench), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout


def _replay_run(path: Path, backfill_ms: float, extra: list[list[float]] | None = None) -> Path:
    """A --json file as bench/replay.py writes it: back-fill 10-20 s, drained at 30 s."""
    probes = [[10 + i * 0.1, backfill_ms, 200] for i in range(50)]
    probes += [[21 + i * 0.1, 4.0, 200] for i in range(50)]  # push replay
    probes += [[31 + i * 0.1, 5.0, 200] for i in range(100)]  # idle
    data = {"marks": {"started": 0, "backfill": [10, 20], "drained": 30}}
    path.write_text(json.dumps(data | {"probes": probes + (extra or [])}))
    return path


def _pooled(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pooled.py"), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pooled_judges_every_probe_of_all_runs_together(tmp_path: Path) -> None:
    # one run at 8 ms meets 2x idle (10 ms), one at 12 ms does not: their pool does not either;
    # a failed probe is no sample at all
    fast = _replay_run(tmp_path / "a.json", 8.0, extra=[[12.0, 900.0, 503]])
    slow = _replay_run(tmp_path / "b.json", 12.0)
    done = _pooled(fast, slow)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pooled over 2 runs: back-fill n=100 " in done.stdout
    assert "back-fill 12.00 ms <= 2 x idle 5.00 ms -> not met" in done.stdout
    assert "back-fill 12.00 ms <= 20 ms -> met" in done.stdout
    alone = _pooled(fast)
    assert "back-fill 8.00 ms <= 2 x idle 5.00 ms -> met" in alone.stdout


def test_pooled_reads_the_people_sync_and_refuses_a_mix(tmp_path: Path) -> None:
    sync = tmp_path / "sync.json"
    phases = {"during the sync": [30_000] * 10 + [6_000] * 90, "idle after it": [5_000] * 100}
    sync.write_text(json.dumps({"code": "x", "sync_s": 15.0, "phases_us": phases}))
    done = _pooled(sync)
    assert "people sync 30.00 ms <= 20 ms -> not met" in done.stdout
    mixed = _pooled(sync, _replay_run(tmp_path / "r.json", 8.0))
    assert mixed.returncode == 65
    assert "a different benchmark" in mixed.stdout
    (tmp_path / "bad.json").write_text("{")
    assert _pooled(tmp_path / "bad.json").returncode == 65
