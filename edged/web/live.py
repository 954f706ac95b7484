"""Live events for the web page: each stored record pushed to the open streams (SSE).

:meth:`Live.on_record` is a record listener (edged/hooks.py): the receiver calls it on the event
loop after a live record's commit; it builds one small summary and appends it to every open
stream's buffer. It never blocks and never fails the record: a stream that does not keep up
loses its oldest summaries (at most ``BUFFER`` are kept, and the page is told of the gap), and
at most ``MAX_STREAMS`` streams are open at once. Replayed records and duplicates are not pushed
(they are in the events list). At stop, every stream is ended at once, so the server's
graceful stop does not wait on them.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from edged import aio
from edged.model import Event
from edged.store.eventjson import iso

BUFFER = 256
MAX_STREAMS = 20
STATE_EVERY = 1.0  # seconds between two looks at the doors' and modes' state
KEEPALIVE = 15.0  # seconds of silence before a comment line keeps proxies from timing out
COALESCE = 0.1  # seconds a woken stream waits for more records before it writes


@dataclass(eq=False)  # compared and hashed by identity: kept in a set
class Stream:
    """One browser's stream: what is waiting for it and what wakes it."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=BUFFER))
    lost: int = 0


class TooManyStreams(Exception):
    """``MAX_STREAMS`` streams are open already."""


def summary(event: Event, record: Any, stored: Any) -> dict[str, Any]:
    """What the page shows of a record in the live list."""
    user = event.user
    return {
        "id": stored.id,
        "received_at": iso(record.received_at),
        "kind": event.kind.value,
        "terminal": record.terminal or event.serial,
        "door": record.door,
        "person_id": record.person_id,
        "name": user.name if user else None,
        "decision": record.decision,
        "reason": record.reason,
        "door_outcome": record.door_outcome,
        "image": bool(event.image_b64),
    }


class Live:
    """The open streams and the listener that feeds them."""

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping
        self.streams: set[Stream] = set()
        self.pushed = 0
        self._looked: tuple[float, str | None] = (0.0, None)  # the last look at the state

    def on_record(self, event: Event, record: Any, stored: Any) -> None:
        """The record listener: queue the record's summary for every open stream."""
        if stored.duplicate or stored.replayed or not self.streams:
            return
        item = summary(event, record, stored)
        for stream in self.streams:
            if len(stream.waiting) == BUFFER:
                stream.lost += 1
            stream.waiting.append(item)
            stream.wake.set()
        self.pushed += 1

    async def run(self) -> None:
        """A daemon service: at stop, end every stream."""
        try:
            await self.stopping.wait()
        finally:
            self.close()

    def close(self) -> None:
        for stream in self.streams:
            stream.wake.set()

    def open(self) -> Stream:
        if len(self.streams) >= MAX_STREAMS:
            raise TooManyStreams
        stream = Stream()
        self.streams.add(stream)
        return stream

    async def events(
        self,
        stream: Stream,
        state: Callable[[], dict[str, Any]],
        keep: Callable[[dict[str, Any]], bool],
    ) -> AsyncIterator[str]:
        """The SSE text of one stream: ``record`` events (those ``keep`` passes), a ``state``
        event whenever the doors' or modes' state changed, comments to keep it open.

        Records that arrive together go out in one write: after a wake the stream waits
        ``COALESCE`` seconds for more. The state is looked at every ``STATE_EVERY`` seconds and
        after records arrive, at most once every ``COALESCE`` seconds for all streams together,
        never once a record.
        """
        loop = asyncio.get_running_loop()
        last_state = ""
        looked = -STATE_EVERY
        quiet_since = loop.time()
        woken = False
        try:
            while not self.stopping.is_set():
                out: list[str] = []
                # a record may have moved a door: look again then, not only once a second
                if loop.time() - looked >= (COALESCE if woken else STATE_EVERY):
                    looked = loop.time()
                    current = self._state(state, looked)
                    if current != last_state:
                        out.append(f"event: state\ndata: {current}\n\n")
                        last_state = current
                if stream.lost:
                    out.append(f"event: gap\ndata: {stream.lost}\n\n")
                    stream.lost = 0
                while stream.waiting:
                    item = stream.waiting.popleft()
                    if keep(item):
                        out.append(f"id: {item['id']}\nevent: record\ndata: {json.dumps(item)}\n\n")
                if out:
                    quiet_since = loop.time()
                    yield "".join(out)
                elif loop.time() - quiet_since >= KEEPALIVE:
                    quiet_since = loop.time()
                    yield ": keepalive\n\n"
                stream.wake.clear()
                left = max(0.0, STATE_EVERY - (loop.time() - looked))
                woken = await aio.wait_event(stream.wake, left)
                if woken and not self.stopping.is_set():
                    await aio.wait_event(self.stopping, COALESCE)  # let a burst gather
        finally:
            self.streams.discard(stream)

    def _state(self, state: Callable[[], dict[str, Any]], now: float) -> str:
        """The state as JSON, computed at most once every ``COALESCE`` seconds for all
        streams together."""
        at, text = self._looked
        if text is None or now - at >= COALESCE:
            text = json.dumps(state(), sort_keys=True, default=str)
            self._looked = (now, text)
        return text
