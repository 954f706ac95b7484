"""Back-fill: read a terminal's stored records for a gap and ingest the ones edged never got.

They are stored as replayed (``Replay.BACKFILL``): kept for the audit trail, acknowledged to
nobody, and never acted upon — the receiver's listeners are not called for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from edged.errors import PayloadError
from edged.model import Replay
from edged.normalize import normalize
from edged.receiver import ack_body
from edged.store import Record, Store
from edged.terminals import TerminalClient

log = logging.getLogger(__name__)

MAX_PAGES = 500  # 100,000 records: bounds one back-fill (the terminal buffers 50,000)


def _stored(store: Store, key: str) -> bool:
    row = store.db.conn.execute("SELECT 1 FROM events WHERE dedup_key = ?", (key,)).fetchone()
    return row is not None


def _records(
    items: list[Any], serial: str, terminal: str, store: Store, now: float
) -> tuple[list[Record], int]:
    """The page's records edged does not have yet; and how many items were unusable."""
    out: list[Record] = []
    bad = 0
    keys: set[str] = set()
    for item in items:
        try:
            event = normalize({"type": 0, "data": item}, serial)
        except (PayloadError, RecursionError):
            bad += 1
            continue
        if event.serial != serial or event.dedup_key in keys or _stored(store, event.dedup_key):
            continue
        keys.add(event.dedup_key)
        event.image_b64 = None  # history pages carry no snapshot worth keeping
        out.append(Record(event, now, Replay.BACKFILL, terminal, ack_body()))
    return out, bad


async def backfill(
    client: TerminalClient,
    store: Store,
    begin: float,
    end: float,
    clock: Callable[[], float] = time.time,
) -> int:
    """Ingest the terminal's records in [begin, end] that are not stored; returns how many."""
    terminal = client.terminal
    offset, added, bad = 0, 0, 0
    for _ in range(MAX_PAGES):
        page = await client.records(begin, end, offset)
        items = page.get("items") or []
        if not isinstance(items, list) or not items:
            break
        records, unusable = _records(items, terminal.serial, terminal.name, store, clock())
        bad += unusable
        stored = await asyncio.gather(*(store.save(r) for r in records))
        added += sum(1 for s in stored if not s.duplicate)
        offset += len(items)
        total = page.get("total")
        if isinstance(total, int) and offset >= total:
            break
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
