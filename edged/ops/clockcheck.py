"""The gateway clock: is it plausible at all?"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from edged import BUILD_DATE
from edged.clock import BUILD_EPOCH as BUILD_EPOCH
from edged.clock import plausible as plausible
from edged.store.eventjson import iso

log = logging.getLogger(__name__)


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
