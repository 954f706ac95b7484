"""The gateway clock: is it plausible at all?"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from edged import BUILD_DATE
from edged.store.eventjson import iso

log = logging.getLogger(__name__)

BUILD_EPOCH = datetime.fromisoformat(BUILD_DATE).replace(tzinfo=UTC).timestamp()


def plausible(now: float) -> bool:
    """A clock earlier than this build's date is certainly wrong (no RTC, no NTP yet)."""
    return now >= BUILD_EPOCH


def report(now: float) -> bool:
    """Log loudly when the clock is implausible; returns whether it is plausible."""
    if plausible(now):
        return True
    log.error(
        "the gateway clock says %s, earlier than this build (%s): replay checks cannot be "
        "trusted and every dated record will look replayed until the clock is set (check NTP)",
        datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        BUILD_DATE,
    )
    return False


def readiness() -> tuple[str, bool, dict[str, Any]]:
    """The ``clock`` entry of /readyz: plausible or not, and what it says."""
    now = time.time()
    return "clock", plausible(now), {"now": iso(now)}
