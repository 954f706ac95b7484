"""Store and forward: every stored record goes to the upstream, in order, at least once.

The outbox is the events table itself and one cursor, ``outbox.forwarded_up_to``: the highest
event id the upstream has acknowledged. A batch is the next records after the cursor in id
order; the cursor moves (durably, through the store's writer) only after the upstream answered
the batch with ``{"code": 200}``, so a restart or a power cut resends at most the batch in flight,
with the same idempotency keys (``events.dedup_key``). Retention never deletes records past the
cursor. Batch format and acknowledgement: docs/upstream.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from edged import config
from edged.clock import SYSTEM, Clock
from edged.errors import EdgedError
from edged.model import Event
from edged.store import events as store
from edged.store import snapshots
from edged.store.events import Record, Store, Stored
from edged.store.outbox import advance, cursor, status, waiting
from edged.upstream import client as upstream

log = logging.getLogger(__name__)

MAX_ACK_BYTES = 64 * 1024  # an acknowledgement is a few bytes; past this it is refused unread

COLUMNS = (
    "id, dedup_key, kind, push_type, serial, terminal, uuid, occurred_at, received_at, user_id, "
    "user_name, person_id, replayed, replay_reason, decision, reason, rule, source, "
    "upstream_error, door, image_path, image_offset, image_bytes, raw, response"
)


class ForwardFailure(Exception):
    """The upstream did not acknowledge a batch."""


def check_acknowledgement(content: bytes) -> None:
    """Raise ForwardFailure, naming what was received, unless the body is ``{"code": 200}``."""
    try:
        answer = json.loads(content)
    except (ValueError, RecursionError):
        raise ForwardFailure(f"answer is not JSON: {upstream.excerpt(content)}") from None
    if not isinstance(answer, dict):
        raise ForwardFailure(f"answer is not a JSON object: {upstream.excerpt(content)}")
    code = answer.get("code")
    if code != 200 or isinstance(code, bool):
        msg = answer.get("msg", answer.get("message"))
        said = f": {upstream.excerpt(str(msg).encode())}" if msg is not None else ""
        raise ForwardFailure(f"not acknowledged: code {str(code)[:20]}{said}")


@dataclass
class Batch:
    """The next records to forward, already encoded."""

    body: bytes
    first_id: int
    last_id: int
    count: int
    keys: list[str] = field(default_factory=list)


def _record_json(row: sqlite3.Row, image: str | None) -> str:
    """One record of a batch; the stored payload and answer are spliced in as they are."""
    meta = {
        "key": row["dedup_key"],
        "id": row["id"],
        "kind": row["kind"],
        "push_type": row["push_type"],
        "serial": row["serial"],
        "terminal": row["terminal"],
        "door": row["door"],  # the door the decision was made for (stored with the record)
        "uuid": row["uuid"],
        "occurred_at": row["occurred_at"],
        "received_at": row["received_at"],
        "user_id": row["user_id"],
        "user_name": row["user_name"],
        "person_id": row["person_id"],
        "replayed": bool(row["replayed"]),
        "replay_reason": row["replay_reason"],
        "decision": row["decision"],
        "reason": row["reason"],
        "rule": row["rule"],
        "source": row["source"],
        "upstream_error": row["upstream_error"],
        "image": image,
    }
    head = json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
    return f'{head[:-1]},"payload":{row["raw"]},"response":{row["response"]}}}'


class Forwarder:
    """Sends the outbox to ``upstream.forward_url`` batch by batch, with tenacity backoff."""

    def __init__(
        self,
        cfg: config.Config,
        store: Store,
        client: httpx.AsyncClient,
        clock: Clock = SYSTEM,
    ) -> None:
        self.cfg = cfg
        self.up = cfg.upstream
        self.store = store
        self.client = client
        self.clock = clock
        self.images = cfg.storage.images_path
        self.wake = asyncio.Event()
        self.down = False
        self.last_error: str | None = None
        self.attempts = 0
        self._conn: sqlite3.Connection | None = None
        self._reading = False

    def listener(self, event: Event, record: Record, stored: Stored) -> None:
        """Receiver listener: a live record was stored, forward without waiting for the poll."""
        self.wake.set()

    def prune_limit(self, conn: sqlite3.Connection) -> int:
        """Retention may delete only what the upstream has acknowledged."""
        return cursor(conn)

    # ----- reading the outbox (in a worker thread, own connection) ----------------------------

    def next_batch(self) -> Batch | None:
        """The records after the cursor, at most a batch's count and (roughly) bytes."""
        if self._conn is None:
            self._conn = store.connect(self.store.path)
        conn = self._conn
        self._reading = True
        try:
            rows = waiting(conn, COLUMNS, self.up.forward_batch_size)
        finally:
            self._reading = False
        parts: list[str] = []
        keys: list[str] = []
        size = 0
        images = self.up.forward_include_images
        if images and any(row["image_path"] for row in rows):
            self.store.sync_files(5.0)  # snapshot files follow their commit by a moment
        for row in rows:
            image_size = (int(row["image_bytes"] or 0) * 4 // 3) if images else 0
            estimate = len(row["raw"]) + len(row["response"]) + image_size + 600
            if parts and size + estimate > self.up.forward_max_bytes:
                break  # decided before reading the image: no file read for nothing
            image = self._image(row) if images else None
            part = _record_json(row, image)
            parts.append(part)
            keys.append(row["dedup_key"])
            size += len(part)
        if not parts:
            return None
        gateway = json.dumps(self.cfg.site.name, ensure_ascii=False)
        body = f'{{"gateway":{gateway},"records":[{",".join(parts)}]}}'
        first, last = int(rows[0]["id"]), int(rows[len(parts) - 1]["id"])
        return Batch(body.encode(), first, last, len(parts), keys)

    def _image(self, row: sqlite3.Row) -> str | None:
        if not row["image_path"]:
            return None
        data = snapshots.read(
            Path(self.images), row["image_path"], row["image_offset"], row["image_bytes"]
        )
        if data is None:
            return None  # pruned under the images quota: the record goes without it
        return base64.b64encode(data).decode("ascii")

    # ----- sending ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forward forever: a batch when there is one, else wait for a record or the poll."""
        while True:
            try:
                await self.step()
            except (EdgedError, sqlite3.Error, OSError) as exc:
                log.error("outbox: cannot read the outbox (will try again): %s", exc)
                await self.clock.sleep(self.up.forward_retry_max)
            except Exception:  # a bug must not stop forwarding for good
                log.exception("outbox: unexpected error (will try again)")
                await self.clock.sleep(self.up.forward_retry_max)

    async def step(self) -> None:
        """Forward one batch, or wait for a record or the poll when there is none."""
        batch = await asyncio.to_thread(self.next_batch)
        if batch is None:
            self.wake.clear()
            await self.clock.wait(self.wake, self.up.forward_interval)
            return
        await self.send(batch)
        await self.acknowledged(batch)

    async def acknowledged(self, batch: Batch) -> None:
        """Move the cursor past an acknowledged batch, durably, through the store's writer."""
        now = self.clock.time()
        try:
            await self.store.run(lambda conn: advance(conn, batch.last_id, batch.count, now))
        except (EdgedError, sqlite3.Error) as exc:
            log.error("outbox: cannot record the acknowledged batch (will resend): %s", exc)
            await self.clock.sleep(self.up.forward_retry_max)

    async def send(self, batch: Batch) -> None:
        """POST the batch until the upstream acknowledges it (cancellation goes through)."""
        retrying = AsyncRetrying(
            wait=wait_exponential(
                multiplier=self.up.forward_retry_min,
                min=self.up.forward_retry_min,
                max=self.up.forward_retry_max,
            ),
            retry=retry_if_exception_type(ForwardFailure),
            before_sleep=self._before_sleep,
            sleep=self.clock.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.post(batch)
        if self.down:
            self.down = False
            log.info("forwarding to %s works again", self.up.forward_url)

    async def post(self, batch: Batch) -> None:
        """One attempt: the batch is acknowledged by HTTP 2xx with ``{"code": 200}``."""
        self.attempts += 1
        try:
            response = await upstream.fetch(
                self.client,
                "POST",
                self.up.forward_url,
                MAX_ACK_BYTES,
                content=batch.body,
                headers={"content-type": "application/json"},
            )
        except (httpx.HTTPError, OSError) as exc:  # OSError: TLS errors with httpx 0.23
            raise ForwardFailure(f"connection: {type(exc).__name__}") from None
        except upstream.TooLarge as exc:
            raise ForwardFailure(f"not an acknowledgement: {exc}") from None
        if not 200 <= response.status < 300:
            raise ForwardFailure(f"http {response.status}")
        check_acknowledgement(response.content)
        self.last_error = None

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = str(exc)
        log.debug("forwarding attempt %d failed: %s", state.attempt_number, exc)
        if not self.down:
            self.down = True
            log.error(
                "forwarding to %s failed (%s): records stay in the outbox and are retried",
                self.up.forward_url,
                exc,
            )

    async def aclose(self) -> None:
        """Close the connections."""
        await self.client.aclose()
        if self._conn is not None and not self._reading:
            self._conn.close()  # (a read still running in its thread keeps it; GC closes it)
        self._conn = None

    def status(self, now: float) -> dict[str, Any]:
        """Outbox depth and age plus the forwarder's state."""
        out = status(self.store.reader, now)
        out["url"] = self.up.forward_url
        out["state"] = "down" if self.down else "up"
        out["last_error"] = self.last_error
        out["attempts"] = self.attempts
        return out
