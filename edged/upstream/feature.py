"""The upstream as one feature of the daemon: decisions, forwarding, people sync, their hooks.

Built by edged/ops/wiring.py when ``[upstream]`` is enabled: the receiver gets ``authority``,
the store retention's limit (outbox.cursor), the daemon :meth:`Upstream.hooks`, and the admin
API the whole object for its status endpoints.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from edged import config
from edged.hooks import Hooks
from edged.store.events import Store
from edged.upstream.client import Authority, make_client
from edged.upstream.outbox import Forwarder
from edged.upstream.sync import PeopleSync


class Upstream:
    """The upstream's three parts: decisions, forwarding and people sync."""

    def __init__(self, cfg: config.Config, store: Store) -> None:
        up = cfg.upstream
        self.cfg = cfg
        self.store = store
        self.sync: PeopleSync | None = None
        self.forwarder: Forwarder | None = None
        if up.people_url:
            self.sync = PeopleSync(cfg, store, make_client(cfg, up.people_timeout, 2))
        if up.forward_url:
            self.forwarder = Forwarder(cfg, store, make_client(cfg, up.forward_timeout, 2))
        client = make_client(cfg, up.deadline) if up.url else None
        self.authority = Authority(
            cfg,
            client,
            self.sync.stale if self.sync else None,
            store_time=store.commit_estimate,
        )

    def hooks(self) -> Hooks:
        """What the daemon runs for the upstream: forwarding and sync, /readyz, the outbox feed.

        The decisions hook (``authority``) goes to the receiver, retention's limit
        (outbox.cursor) to the store: both when they are built (edged/ops/wiring.py).
        """
        listeners = (self.forwarder.listener,) if self.forwarder is not None else ()
        return Hooks(services=(self.run,), checks=(self.readiness,), listeners=listeners)

    async def run(self) -> None:
        """Forward and sync until the daemon stops; then close every connection."""
        jobs = [part.run() for part in (self.forwarder, self.sync) if part is not None]
        try:
            await asyncio.gather(*jobs)
            await asyncio.Event().wait()  # nothing to run: hold the connections until stopped
        finally:
            for part in (self.forwarder, self.sync):
                if part is not None:
                    await part.aclose()
            await self.authority.aclose()

    def readiness(self) -> tuple[str, bool, dict[str, Any]]:
        """The ``upstream`` check of /readyz: informative, never failing (offline is normal)."""
        return "upstream", True, self.status()

    def status(self) -> dict[str, Any]:
        """Decisions, outbox and people sync, for /readyz, the admin API and the CLI."""
        now = time.time()
        return {
            "decisions": self.authority.status(),
            "outbox": self.forwarder.status(now) if self.forwarder else {"enabled": False},
            "people_sync": self.sync.status(now) if self.sync else {"enabled": False},
        }
