"""Back-fill: read a terminal's stored records for a gap and ingest the ones edged never got.

They are stored as replayed (``Replay.BACKFILL``): kept for the audit trail, acknowledged to
nobody, and never acted upon — the receiver's listeners are not called for them. A page (200
records, ~100 KB of JSON) is parsed in a worker thread (:meth:`TerminalClient.records`), then
normalised and stored in the store's writer thread (:meth:`Store.save_bulk`), a chunk at a time;
a live record waiting goes ahead of the next chunk, and while a remote-auth request is being
answered the next page and chunk wait for it (edged/store/urgency.py). While remote-auth
requests come (the doors are busy), the back-fill rests after each page as long as the CPU
time that page cost, so it takes half the CPU and live requests find a core free; a page that
waited for a slow disk (an SD card's fsync) used little CPU and rests little. The event loop
only reads the answer and awaits, so live requests are not held up by the past.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from edged.errors import PayloadError
from edged.model import Replay
from edged.receive.normalize import normalize
from edged.receive.receiver import ack_body
from edged.store.events import Record, Store
from edged.terminals.client import TerminalClient

log = logging.getLogger(__name__)

MAX_PAGES = 500  # 100,000 records: bounds one back-fill (the terminal buffers 50,000)
MAX_REST = 1.0  # the longest rest after a page (a page that took long is no reason to stop)


@dataclass
class _Tally:
    """Items of a page that could not be read (counted as the writer builds the records)."""

    bad: int = 0


def _records(
    items: list[Any], serial: str, terminal: str, now: float, tally: _Tally
) -> Iterator[Record]:
    """The page's records, built lazily: the store consumes them in its writer thread.

    Records already stored are skipped by the store (their unique key), and a record repeated
    within the page is built once.
    """
    keys: set[str] = set()
    for item in items:
        try:
            event = normalize({"type": 0, "data": item}, serial)
        except (PayloadError, RecursionError):
            tally.bad += 1
            continue
        if event.serial != serial or event.dedup_key in keys:
            continue
        keys.add(event.dedup_key)
        event.image_b64 = None  # history pages carry no snapshot worth keeping
        yield Record(event, now, Replay.BACKFILL, terminal, ack_body())


async def backfill(
    client: TerminalClient,
    store: Store,
    begin: float,
    end: float,
    clock: Callable[[], float] = time.time,
    cpu: Callable[[], float] = time.process_time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> int:
    """Ingest the terminal's records in [begin, end] that are not stored; returns how many.

    The next page is read while one is stored (one request at a time still): the terminal's
    answer and the writer's commits overlap instead of adding up. While the doors are busy,
    each page is followed by a rest as long as the CPU time edged spent meanwhile (``cpu``,
    all its threads: :meth:`Urgency.rest`); time spent waiting for the disk costs no rest.
    """
    terminal = client.terminal
    offset, added, bad = 0, 0, 0
    page = await client.records(begin, end, offset)
    for n in range(MAX_PAGES):
        started = cpu()
        items = page.get("items") or []
        if not isinstance(items, list) or not items:
            break
        offset += len(items)
        total = page.get("total")
        last = (isinstance(total, int) and offset >= total) or n == MAX_PAGES - 1
        following = None if last else asyncio.create_task(client.records(begin, end, offset))
        tally = _Tally()
        try:
            await store.urgency.behind()  # a remote-auth answer first (edged/store/urgency.py)
            added += await store.save_bulk(
                _records(items, terminal.serial, terminal.name, clock(), tally)
            )
        except BaseException:
            if following is not None:
                following.cancel()
                with contextlib.suppress(BaseException):
                    await following
            raise
        bad += tally.bad
        if following is None:
            break
        rest = store.urgency.rest(cpu() - started)
        if rest:
            await sleep(min(rest, MAX_REST))
        page = await following
    if bad:
        log.warning("terminal %s: back-fill skipped %d unreadable records", terminal.name, bad)
    if added:
        log.info(
            "terminal %s: back-filled %d records missed since %s",
            terminal.name,
            added,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(begin)),
        )
    return added
