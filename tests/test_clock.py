"""The clock: the system one waits for real, the fake one (tests/timefix.py) only when told."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from edged.clock import SYSTEM, Clock
from tests.timefix import FakeClock, until

pytestmark = pytest.mark.anyio


async def test_the_system_clock_is_the_real_time() -> None:
    clock: Clock = SYSTEM
    assert abs(clock.time() - time.time()) < 1.0
    before = clock.monotonic()
    fired = asyncio.Event()
    clock.call_later(asyncio.get_running_loop(), 0.0, fired.set)
    await clock.sleep(0)
    await asyncio.wait_for(fired.wait(), 5)
    assert clock.monotonic() >= before


def test_fake_timers_run_in_order_each_at_its_own_time() -> None:
    clock = FakeClock(start=10.0, wall=1_000_000.0)
    seen: list[tuple[str, float]] = []
    clock.call_later(None, 2.0, lambda: seen.append(("b", clock.monotonic())))
    clock.call_later(None, 1.0, lambda: seen.append(("a", clock.monotonic())))
    clock.call_later(None, 5.0, lambda: seen.append(("late", clock.monotonic())))
    clock.call_later(None, 1.5, lambda: seen.append(("never", 0.0))).cancel()
    clock.advance(3.0)
    assert seen == [("a", 11.0), ("b", 12.0)]
    assert clock.monotonic() == 13.0 and clock.time() == 1_000_003.0
    assert clock.pending == 1 and clock.next_due() == 15.0


def test_a_timer_set_by_a_timer_runs_in_the_same_advance() -> None:
    clock = FakeClock()
    seen: list[float] = []

    def first() -> None:
        seen.append(clock.monotonic())
        clock.call_later(None, 1.0, lambda: seen.append(clock.monotonic()))

    clock.call_later(None, 1.0, first)
    clock.advance(2.5)
    assert seen == [1001.0, 1002.0]


async def test_fake_sleep_waits_for_advance_also_on_another_loop() -> None:
    clock = FakeClock()
    woke: list[float] = []
    await asyncio.wait_for(_sleep_on(clock, woke, 3.0), 5)  # on this loop
    assert woke == [1003.0]

    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        done = asyncio.run_coroutine_threadsafe(_sleeper(clock, woke, 1.0), other)
        await until(lambda: clock.pending == 1)
        assert not done.done()
        clock.advance(1.0)
        await asyncio.wrap_future(done)
        assert woke == [1003.0, 1004.0]
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()


async def _sleep_on(clock: FakeClock, woke: list[float], delay: float) -> None:
    task = asyncio.create_task(_sleeper(clock, woke, delay))
    await until(lambda: clock.pending == 1)
    assert not task.done()
    clock.advance(delay)
    await task


async def _sleeper(clock: FakeClock, woke: list[float], delay: float) -> None:
    await clock.sleep(delay)
    woke.append(clock.monotonic())


async def test_wait_ends_on_the_event_or_the_timeout() -> None:
    event = asyncio.Event()
    assert await SYSTEM.wait(event, 0.0) is False
    event.set()
    assert await SYSTEM.wait(event, 5.0) is True

    clock = FakeClock()
    late = asyncio.Event()
    task = asyncio.create_task(clock.wait(late, 10.0))
    await until(lambda: clock.pending == 1)
    clock.advance(9.0)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(1.0)
    assert await task is False and clock.pending == 0
    woken = asyncio.create_task(clock.wait(late, 10.0))
    await until(lambda: clock.pending == 1)
    late.set()
    assert await woken is True
    assert clock.pending == 0  # its timeout called off
