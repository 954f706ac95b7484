"""Rules the code keeps that no linter checks."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "edged"


def test_no_asyncio_timeout() -> None:
    """Python 3.11.2 (Debian bookworm) turns an expired asyncio.timeout() into a bare
    cancellation in any task that was cancelled before: deadlines use asyncio.wait_for."""
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(PACKAGE.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\basyncio\.timeout\(|\bfrom asyncio import .*\btimeout\b", line)
        and not line.lstrip().startswith("#")
    ]
    assert not offenders, f"use asyncio.wait_for instead of asyncio.timeout: {offenders}"
