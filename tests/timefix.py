"""Time in tests: a fake clock advanced explicitly, and waiting on a condition with a deadline."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class FakeTimer:
    """A callback due at a fake monotonic time."""

    when: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    loop: asyncio.AbstractEventLoop | None = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        """Do not run the callback."""
        self.cancelled = True


class FakeClock:
    """An ``edged.clock.Clock`` whose time moves only when ``advance`` is called (any thread).

    Timers due by the new time run in order, each with the clock at its own due time: on the
    caller's thread when their loop is the caller's (or not running), else handed to their
    loop's thread. Sleepers wake on their own loop.
    """

    def __init__(self, start: float = 1000.0, wall: float | None = None) -> None:
        self.now = start
        self._wall_offset = (time.time() if wall is None else wall) - start
        self._timers: list[FakeTimer] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """The fake monotonic time."""
        return self.now

    def time(self) -> float:
        """The fake wall time (moves with ``monotonic``)."""
        return self.now + self._wall_offset

    def call_later(
        self,
        loop: asyncio.AbstractEventLoop | None,
        delay: float,
        callback: Callable[[], None],
    ) -> FakeTimer:
        """Run ``callback`` once the clock has been advanced by ``delay``."""
        with self._lock:
            timer = FakeTimer(self.now + max(delay, 0.0), next(self._seq), callback, loop)
            heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, delay: float) -> None:
        """Wait until the clock has been advanced by ``delay``."""
        loop = asyncio.get_running_loop()
        woken = loop.create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_later(loop, delay, wake)
        try:
            await woken
        finally:
            timer.cancel()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until ``event`` is set or the clock has been advanced by ``timeout``."""
        if event.is_set():
            return True
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.sleep(timeout))]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return event.is_set()

    @property
    def pending(self) -> int:
        """Timers (and sleepers) not yet due or cancelled."""
        with self._lock:
            return sum(not t.cancelled for t in self._timers)

    def next_due(self) -> float | None:
        """The due time of the earliest live timer."""
        with self._lock:
            live = [t.when for t in self._timers if not t.cancelled]
        return min(live) if live else None

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer due on the way."""
        target = self.now + seconds
        while True:
            with self._lock:
                if not self._timers or self._timers[0].when > target:
                    break
                timer = heapq.heappop(self._timers)
                if timer.cancelled:
                    continue
                self.now = max(self.now, timer.when)
            self._run(timer)
        self.now = max(self.now, target)

    def _run(self, timer: FakeTimer) -> None:
        loop = timer.loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            timer.callback()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(timer.callback)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Wait until ``predicate()``; returns the seconds it took; fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def turn(rounds: int = 3) -> None:
    """Let the running loop run what is ready (callbacks posted from a pin's edge, wakeups)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
