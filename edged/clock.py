"""Time as a parameter: the clock every class that waits or stamps takes.

A part that reads the time, sleeps, or sets a timer does it through a ``Clock`` passed in
(``SYSTEM`` by default), so a test can drive time with a fake clock instead of sleeping
(tests/timefix.py). ``monotonic`` is for durations and deadlines, ``time`` for stamps written
down (epoch seconds); ``sleep``, ``wait`` (an event, at most so long) and ``call_later`` are what
waiting needs, on the caller's loop.

``plausible`` is the one rule for whether the gateway's wall clock can be believed at all
(the daemon's report and /readyz entry are ``edged.ops.clockcheck``; the managed terminals'
clocks are set from the gateway's only when it holds, ``edged.terminals.clocksync``).
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from edged import BUILD_DATE, aio

BUILD_EPOCH = datetime.fromisoformat(BUILD_DATE).replace(tzinfo=UTC).timestamp()


def plausible(now: float) -> bool:
    """A wall clock earlier than this build's date is certainly wrong (no RTC, no NTP yet)."""
    return now >= BUILD_EPOCH


class Timer(Protocol):
    """A scheduled callback that can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Do not run the callback (nothing when it ran already)."""


class Clock(Protocol):
    """Monotonic and wall time, and the two ways of waiting for it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, deadlines)."""

    def time(self) -> float:
        """Wall-clock time in epoch seconds (stamps)."""

    async def sleep(self, delay: float) -> None:
        """Wait ``delay`` seconds."""

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until ``event`` is set, at most ``timeout`` seconds; whether it is set."""

    def call_later(
        self, loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], None]
    ) -> Timer:
        """Run ``callback`` on ``loop`` after ``delay`` seconds."""


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time``, ``asyncio.sleep``, the loop's timers."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return _time.monotonic()

    def time(self) -> float:
        """``time.time()``."""
        return _time.time()

    async def sleep(self, delay: float) -> None:
        """``asyncio.sleep(delay)``."""
        await asyncio.sleep(delay)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Whether ``event`` was set within ``timeout`` seconds (edged/aio.py: no lost cancel)."""
        return await aio.wait_event(event, timeout)

    def call_later(
        self, loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], None]
    ) -> Timer:
        """``loop.call_later(delay, callback)``."""
        return loop.call_later(delay, callback)


SYSTEM: Clock = SystemClock()
