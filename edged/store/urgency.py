"""Answers a person waits for go first: the past steps aside while one is being given.

A remote-auth request has somebody standing at the door; a terminal's replayed pushes and a
back-fill's pages have nobody waiting on them. On a gateway's CPU and SD card they compete for
the same event loop, the same GIL and the same writer thread, and a replay after an outage
(50,000 records) would otherwise sit in front of every live answer.

The receiver marks each remote-auth request from its start to its answer (:meth:`Urgency.marked`,
on the event loop). While one is marked:

- a push waits before it is read and parsed (:meth:`Urgency.behind`, on the event loop);
- the back-fill waits before it hands the writer its next page;
- the writer thread does not start a back-fill chunk (:meth:`Urgency.hold_bulk`, polled from
  the writer thread) but waits for the live record to be queued, so that record's commit does
  not queue behind 32 back-filled inserts and their fsync; a chunk being built when an answer
  begins (``marks`` changed) is cut short and committed as it is;
- a worker thread busy with the past (parsing a back-fill page, building a people sync's plan)
  sleeps between its items (:meth:`Urgency.aside`, :meth:`Urgency.paced`): Python threads share
  one interpreter lock, and a thread that computes holds it for the 5 ms switch interval each
  time the event loop asks for it back, a few times for every answer.

Each wait ends when no request is marked any more or after ``HOLD`` seconds, whichever is first:
the past is slowed while somebody waits, never stopped, however busy the doors are.

Those waits cover a request from its handler's start to its answer, not the moments before and
after, when the request is read and the answer written, nor the other programs of the gateway.
So while the doors are busy (a remote-auth request marked in the last ``RECENT`` seconds,
:meth:`Urgency.recent`), the back-fill also rests after each page (a people sync after each
batch) for as long as the CPU time edged spent on it (a duty cycle of ``DUTY``): it uses half
the CPU, and a live request finds a core free. Time spent waiting for the disk is not counted:
on a slow card the back-fill is the writer's fsyncs, which a rest would only lengthen.
With nobody at the doors it goes at full speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

HOLD = 0.05  # the longest any one piece of replay work waits for the live answers
NAP = 0.001  # a worker thread's sleep while it steps aside (the lock is free meanwhile)
PACE = 64  # items a worker thread handles between two looks at the count
RECENT = 10.0  # seconds after a remote-auth request during which the doors count as busy
DUTY = 0.5  # the share of the time the back-fill works while the doors are busy

T = TypeVar("T")


class Urgency:
    """A count of answers somebody waits for (kept on the event loop)."""

    def __init__(self, hold: float = HOLD, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold = hold
        self.clock = clock
        self.last = -float("inf")  # when the latest answer was marked (``clock``)
        self.marks = 0  # answers marked so far (a new one is seen from the writer thread)
        self.count = 0  # read from the writer thread: an int read is atomic
        self.held = 0  # how often replay work on the event loop waited
        self.held_bulk = 0  # how often the writer thread held a back-fill chunk
        self.held_threads = 0  # how often a worker thread stepped aside
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.contextmanager
    def marked(self) -> Iterator[None]:
        """Mark an answer somebody waits for while the block runs (event loop only)."""
        self.count += 1
        self.marks += 1
        self.last = self.clock()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                waiters, self._waiters = self._waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def recent(self, within: float = RECENT) -> bool:
        """Whether an answer was marked in the last ``within`` seconds: the doors are busy."""
        return self.clock() - self.last <= within

    def rest(self, worked: float, duty: float = DUTY) -> float:
        """How long background work that just cost ``worked`` seconds of CPU rests, so that it
        takes ``duty`` of the CPU while the doors are busy; 0 when they are not."""
        if not self.recent():
            return 0.0
        return worked * (1.0 / duty - 1.0)

    async def behind(self) -> None:
        """Return at once when nobody waits; else when the marked answers are given, or
        after ``hold`` seconds (event loop only)."""
        if not self.count:
            return
        self.held += 1
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait({waiter}, timeout=self.hold)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def hold_bulk(
        self, arrived: Callable[[float], bool], clock: Callable[[], float] = time.monotonic
    ) -> None:
        """In the writer thread, before a back-fill chunk: while an answer is marked, wait
        for its record (``arrived(timeout)`` polls the queue and says whether a record came),
        at most ``hold`` seconds."""
        if not self.count:
            return
        self.held_bulk += 1
        deadline = clock() + self.hold
        while self.count:
            left = deadline - clock()
            if left <= 0 or arrived(min(left, 0.002)):
                return

    def aside(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """In a worker thread: while an answer is marked, sleep (the interpreter lock free)
        until none is, at most ``hold`` seconds. Returns at once when nobody waits."""
        if not self.count:
            return
        self.held_threads += 1
        deadline = clock() + self.hold
        while self.count and clock() < deadline:
            sleep(NAP)

    def paced(self, items: Iterable[T], every: int = PACE) -> Iterator[T]:
        """``items``, for a worker thread: it steps aside (:meth:`aside`) before every
        ``every``-th item."""
        for n, item in enumerate(items):
            if not n % every:
                self.aside()
            yield item


def paced(items: Iterable[T], urgency: Urgency | None, every: int = PACE) -> Iterator[T]:
    """``items`` paced by ``urgency`` (:meth:`Urgency.paced`), or as they come without one: for
    pure code that a worker thread runs beside the live answers (a people sync's library)."""
    return iter(items) if urgency is None else urgency.paced(items, every)
