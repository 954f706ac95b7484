"""The benchmarks still run: every one answers --help, so its imports of edged resolve."""

from __future__ import annotations

import subprocess
import sys

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
