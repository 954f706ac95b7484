"""Helpers the terminals' tests share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edged.receive.receiver import TerminalSeen
from edged.store import events as store
from edged.terminals.reconciler import TerminalReconciler


class Running:
    """A reconciler task with its store; stopped (and checked) at the end."""

    def __init__(self, cfg: Any, seen: dict[str, TerminalSeen] | None = None, **kw: Any) -> None:
        self.store = store.Store(cfg.storage.database_path)
        self.rec = TerminalReconciler(cfg, cfg.terminals[0], self.store, seen or {}, **kw)
        self.task = asyncio.create_task(self.rec.run())

    async def stop(self) -> None:
        self.rec.stop()
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        assert self.rec.client is None or self.rec.client.http.is_closed
        self.store.close()
