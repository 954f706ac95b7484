"""People sync: pull the people document from the upstream, validate it whole, apply it atomically.

The document is the JSON of ``edged people import`` (a list of people, or ``{"people": [...]}``),
fetched with ``If-None-Match``/``If-Modified-Since``. A document with any bad row is refused with
one clear log line and the last good cache stays; a good one replaces the cache in one
transaction. The time of the last successful sync (a 304 counts: the cache is confirmed) is kept
in ``people_sync``; past ``upstream.max_cache_age`` the cache is *stale* (see upstream/client.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from edged import config
from edged.access import people, syncstate
from edged.access.faces import FaceStore
from edged.errors import ImportFileError, StoreError
from edged.store import events as store
from edged.store.events import Store
from edged.upstream import client as upstream

log = logging.getLogger(__name__)

SHOWN_PROBLEMS = 5


class SyncFailure(Exception):
    """The people document could not be fetched or was refused."""


def parse_document(content: bytes, tz: ZoneInfo) -> people.Document:
    """Validate a whole people document (the import format); raise SyncFailure on problems."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise SyncFailure("the document is not valid JSON") from None
    if not isinstance(body, list | dict):
        raise SyncFailure('expected a JSON list of people or {"people": [...], ...}')
    listed = body if isinstance(body, list) else body.get("people")
    if not listed:
        raise SyncFailure("the document lists nobody (refusing to empty the people cache)")
    try:
        return people.parse_document(body, tz)
    except ImportFileError as exc:
        shown = "; ".join(exc.problems[:SHOWN_PROBLEMS])
        more = len(exc.problems) - SHOWN_PROBLEMS
        suffix = f" (and {more} more)" if more > 0 else ""
        raise SyncFailure(f"{len(exc.problems)} problem(s): {shown}{suffix}") from None


class PeopleSync:
    """Pulls ``upstream.people_url`` every ``people_interval`` seconds."""

    def __init__(
        self,
        cfg: config.Config,
        store: Store,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.up = cfg.upstream
        self.store = store
        self.client = client
        self.clock = clock
        self.tz = ZoneInfo(cfg.site.timezone)
        self.faces = FaceStore(cfg.storage.faces_path)
        self.state = syncstate.load(store.reader)
        if self.state.url != self.up.people_url:
            self.state.etag = self.state.last_modified = None  # another source: fetch it whole
        self.failing = False
        self.was_stale = False

    def stale(self, now: float) -> bool:
        """The cache is older than ``max_cache_age`` (never, when that is 0)."""
        if not self.up.max_cache_age:
            return False
        synced = self.state.synced_at
        return synced is None or now - synced > self.up.max_cache_age

    async def run(self) -> None:
        """Sync now and then every interval, until cancelled."""
        while True:
            try:
                await self.sync_once()
            except Exception:  # a bug must not stop syncing for good
                log.exception("people sync: unexpected error (will try again)")
            self._report_staleness()
            await asyncio.sleep(self.up.people_interval)

    async def sync_once(self) -> str:
        """One attempt: ``updated``, ``unchanged`` or ``failed``."""
        now = self.clock()
        try:
            outcome = await self._fetch_and_apply(now)
        except SyncFailure as exc:
            self._failed(str(exc), now)
            return "failed"
        if self.failing:
            self.failing = False
            log.info("people sync from %s works again", self.up.people_url)
        return outcome

    async def _fetch_and_apply(self, now: float) -> str:
        headers = {}
        if self.state.etag:
            headers["if-none-match"] = self.state.etag
        if self.state.last_modified:
            headers["if-modified-since"] = self.state.last_modified
        limit = self.up.people_max_bytes
        try:
            response = await upstream.fetch(
                self.client, "GET", self.up.people_url, limit, headers=headers
            )
        except (httpx.HTTPError, OSError) as exc:  # OSError: TLS errors with httpx 0.23
            raise SyncFailure(f"cannot fetch: {type(exc).__name__}") from None
        except upstream.TooLarge:
            raise SyncFailure(
                f"the document is larger than {limit} bytes (upstream.people_max_bytes)"
            ) from None
        if response.status == 304:
            await self._save(now, response, None)
            return "unchanged"
        if response.status != 200:
            raise SyncFailure(f"HTTP {response.status}")
        doc = parse_document(response.content, self.tz)
        await self._save(now, response, doc)
        return "updated"

    async def _save(
        self, now: float, response: upstream.Answer, doc: people.Document | None
    ) -> None:
        state = syncstate.SyncState(
            url=self.up.people_url,
            etag=response.headers.get("etag") or self.state.etag,
            last_modified=response.headers.get("last-modified") or self.state.last_modified,
            synced_at=now,
            checked_at=now,
            people=len(doc.people or []) if doc is not None else self.state.people,
        )

        def write() -> people.ImportResult | None:
            conn = store.connect(self.store.path)
            try:
                result = None
                if doc is not None:
                    result = people.apply_document(conn, doc, replace=True, faces=self.faces)[
                        "people"
                    ]
                syncstate.save_committed(conn, state)
                return result
            finally:
                conn.close()

        try:
            result = await asyncio.to_thread(write)
        except (ImportFileError, sqlite3.Error, StoreError) as exc:
            raise SyncFailure(f"cannot apply: {exc}") from None
        self.state = state
        if result is not None:
            log.info(
                "people sync: %d people (added %d, updated %d, removed %d)",
                state.people,
                len(result.added),
                len(result.updated),
                len(result.removed),
            )

    def _failed(self, why: str, now: float) -> None:
        """Keep the failure; one ERROR per new problem, the same problem again at DEBUG."""
        again = self.failing and why == self.state.last_error
        self.state.last_error = why
        self.state.checked_at = now
        if again:
            log.debug("people sync from %s failed again: %s", self.up.people_url, why)
            return
        self.failing = True
        log.error(
            "people sync from %s refused or failed, keeping the last good cache: %s",
            self.up.people_url,
            why,
        )

    def _report_staleness(self) -> None:
        stale = self.stale(self.clock())
        if stale and not self.was_stale:
            action = (
                "denying everyone but upstream.override_people"
                if self.up.stale_cache == "deny"
                else "still deciding from it"
            )
            log.warning(
                "the people cache is older than %d s (upstream.max_cache_age): %s",
                self.up.max_cache_age,
                action,
            )
        elif self.was_stale and not stale:
            log.info("the people cache is current again")
        self.was_stale = stale

    async def aclose(self) -> None:
        """Close the connections."""
        await self.client.aclose()

    def status(self, now: float) -> dict[str, Any]:
        """Last sync, age and staleness."""
        synced = self.state.synced_at
        return {
            "enabled": True,
            "url": self.up.people_url,
            "synced_at": synced,
            "age_seconds": round(now - synced, 3) if synced is not None else None,
            "stale": self.stale(now),
            "stale_cache": self.up.stale_cache,
            "people": self.state.people,
            "last_error": self.state.last_error,
            "checked_at": self.state.checked_at,
        }
