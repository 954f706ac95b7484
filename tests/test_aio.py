"""Deadlines that never lose a cancellation (edged/aio.py)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edged import aio

PACKAGE = Path(__file__).resolve().parents[1] / "edged"
TURNS = 50  # loop turns a cancelled task gets to end: it needs two or three


async def _loop_forever_after(wait: Callable[[asyncio.Event], Awaitable[Any]]) -> bool:
    """A reconciler's shape: wait for a wake-up with a deadline, again and again, until cancelled.

    The wake-up and the cancellation arrive in the same loop turn, as when a daemon stops while
    a terminal is being nudged. Whether the task ended.
    """
    wake = asyncio.Event()

    async def run() -> None:
        while True:
            await wait(wake)
            wake.clear()

    task = asyncio.create_task(run())
    for _ in range(3):
        await asyncio.sleep(0)  # the task is waiting now
    wake.set()
    task.cancel()
    for _ in range(TURNS):
        if task.done():
            break
        await asyncio.sleep(0)
    ended = task.done()
    task.cancel()  # a swallowed cancellation: end the task for good before the loop closes
    for _ in range(TURNS):
        await asyncio.sleep(0)
    return ended


def test_a_cancellation_meeting_a_wake_up_ends_the_task() -> None:
    assert asyncio.run(_loop_forever_after(lambda wake: aio.wait_event(wake, 60)))


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for was rewritten in Python 3.12")
def test_the_same_scenario_loses_the_cancellation_with_wait_for_on_python_3_11() -> None:
    """The scenario above is the real one: CPython gh-86296 hangs a task that uses wait_for."""

    async def with_wait_for(wake: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 60)

    assert not asyncio.run(_loop_forever_after(with_wait_for))


def test_within_gives_the_result_in_time() -> None:
    async def main() -> int:
        async def answer() -> int:
            await asyncio.sleep(0)
            return 42

        return await aio.within(answer(), 5)

    assert asyncio.run(main()) == 42


def test_within_cancels_what_overran_and_raises_timeout() -> None:
    cleaned: list[str] = []

    async def main() -> None:
        async def slow() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                cleaned.append("slow")

        with pytest.raises(TimeoutError):
            await aio.within(slow(), 0.01)
        assert cleaned == ["slow"]  # released before within returned, as wait_for does

    asyncio.run(main())


def test_within_passes_the_awaited_error_on() -> None:
    async def main() -> None:
        async def fails() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await aio.within(fails(), 5)

    asyncio.run(main())


def test_a_cancelled_caller_cancels_the_awaited_task() -> None:
    async def main() -> None:
        inner = asyncio.create_task(asyncio.Event().wait())
        outer = asyncio.create_task(aio.within(inner, 60))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        await asyncio.sleep(0)
        assert inner.cancelled()

    asyncio.run(main())


def test_wait_event_says_whether_the_event_came() -> None:
    async def main() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        late = await aio.wait_event(event, 0.01)
        zero = await aio.wait_event(event, 0)
        event.set()
        return late, zero, await aio.wait_event(event, 0)

    assert asyncio.run(main()) == (False, False, True)


def _deadline_calls(tree: ast.AST) -> list[int]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("wait_for", "timeout")
            and isinstance(node.value, ast.Name)
            and node.value.id == "asyncio"
        ):
            found.append(node.lineno)
    return found


def test_the_deadline_finder_sees_both_primitives() -> None:
    source = "import asyncio\nasync def f(x):\n    await asyncio.wait_for(x, 1)\n"
    source += "    async with asyncio.timeout(1):\n        pass\n"
    assert _deadline_calls(ast.parse(source)) == [3, 4]


def test_every_deadline_in_edged_goes_through_aio() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "aio.py"
        for line in _deadline_calls(ast.parse(path.read_text()))
    ]
    assert offenders == []


async def _swallower(times: float, ended: list[str]) -> None:
    """What anyio 3 does inside an httpx call: a cancellation taken for its own deadline."""
    swallowed = 0
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if swallowed >= times:
                ended.append("ended")
                raise
            swallowed += 1


def test_cancel_all_ends_a_task_that_swallowed_its_cancellation() -> None:
    ended: list[str] = []

    async def main() -> list[asyncio.Task[Any]]:
        plain = asyncio.create_task(asyncio.Event().wait())
        stubborn = asyncio.create_task(_swallower(2, ended))
        await asyncio.sleep(0)
        return await aio.cancel_all([plain, stubborn], retry_every=0.01, give_up_after=5)

    assert asyncio.run(main()) == []
    assert ended == ["ended"]


def test_a_single_cancel_and_gather_would_wait_for_ever() -> None:
    """Why cancel_all exists: gather after one cancel() does not return."""

    async def main() -> bool:
        stubborn = asyncio.create_task(_swallower(1, []))
        await asyncio.sleep(0)
        stubborn.cancel()
        done, _ = await asyncio.wait({stubborn}, timeout=0.05)
        stubborn.cancel()  # the second cancellation ends it, before the loop closes
        await asyncio.wait({stubborn})
        return bool(done)

    assert asyncio.run(main()) is False


def test_cancel_all_gives_up_on_a_task_that_never_ends_and_names_it() -> None:
    async def main() -> tuple[list[asyncio.Task[Any]], float]:
        forever = asyncio.create_task(_swallower(float("inf"), []))
        failed = asyncio.create_task(asyncio.sleep(0))
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        start = loop.time()
        stuck = await aio.cancel_all([forever, failed], retry_every=0.01, give_up_after=0.1)
        took = loop.time() - start
        forever.get_coro().close()  # type: ignore[union-attr]
        return stuck, took

    stuck, took = asyncio.run(main())
    assert [t.get_coro().__qualname__ for t in stuck] == ["_swallower"]  # type: ignore[union-attr]
    assert took < 5
