"""Waiting with a deadline in a way that never loses a cancellation, on every Python edged runs on.

Python 3.11 has two deadline primitives and both can break a daemon's stop:

- ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop turn as the
  awaited result (CPython gh-86296, fixed in 3.12 by a rewrite, not backported): the task goes
  on as if nothing happened, and a task that then waits for its next wake-up never ends. Under
  load this is a few in a hundred stops of a reconciler, which then holds the daemon for good.
- ``asyncio.timeout`` on 3.11.2 (Debian bookworm) turns into a plain cancellation in a task that
  was ever cancelled before.

``within`` is built on ``asyncio.wait`` instead, which only ever waits on a future of its own: a
cancellation of the caller always raises in the caller, and the awaited task is cancelled with
it. Every deadline in edged goes through here (a test keeps ``wait_for`` and ``timeout`` out).
``cancel_all`` stops a set of tasks even when one of them swallows a cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """``awaitable``'s result if it is ready within ``timeout`` seconds, else ``TimeoutError``.

    On the deadline the awaitable is cancelled and awaited, as ``wait_for`` does, so what it
    holds is released before this returns; if the caller is cancelled meanwhile, the
    cancellation goes through. A cancellation of the caller cancels the awaitable and raises at
    once.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: its error is not the caller's, the deadline is
    raise TimeoutError


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; whether it is set."""
    if not event.is_set() and timeout > 0:
        with contextlib.suppress(TimeoutError):
            await within(event.wait(), timeout)
    return event.is_set()


async def cancel_all(
    tasks: Iterable[asyncio.Task[Any]], retry_every: float = 0.5, give_up_after: float = 5.0
) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them to end; those still running after ``give_up_after``.

    A task can swallow a cancellation: anyio 3 (Debian bookworm) does when it meets one of its
    own deadlines inside an httpx call, and ``wait_for`` in library code does on Python 3.11. A
    single ``cancel()`` then leaves the task running and whoever gathers it waits for ever, so
    this cancels again every ``retry_every`` seconds. What the tasks raised is retrieved, as
    ``gather(..., return_exceptions=True)`` does.
    """
    tasks = list(tasks)
    loop = asyncio.get_running_loop()
    end = loop.time() + give_up_after
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = end - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(retry_every, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()
    return [task for task in tasks if not task.done()]
