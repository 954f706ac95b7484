"""Modes drive the door hardware (gpiozero MockFactory, real SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
from zoneinfo import ZoneInfo

import pytest

from edged import automation, modes, store
from edged.config import Config
from edged.policy import SITE
from tests.test_doors import LOCK, build, door_cfg, levels, pin, until  # noqa: F401

pytestmark = pytest.mark.anyio
UTC = ZoneInfo("UTC")


async def test_free_access_holds_and_lockdown_locks(door_cfg: Config) -> None:  # noqa: F811
    st = store.Store(door_cfg.storage.database_path)
    site = build(door_cfg, st)
    conn = store.connect(st.path)
    task = asyncio.create_task(automation.run(site, st.db.conn, UTC, interval=0.01))
    try:
        assert pin(LOCK).state is False
        modes.switch(conn, "lobby", "free_access", on=True, by="test")
        await until(lambda: pin(LOCK).state is True)
        modes.switch(conn, SITE, "lockdown", on=True, by="test")
        await until(lambda: pin(LOCK).state is False)
        assert site.lockdown
        modes.switch(conn, SITE, "lockdown", on=False, by="test")
        await until(lambda: pin(LOCK).state is True)  # free access resumes
        modes.switch(conn, "lobby", "free_access", on=False, by="test")
        await until(lambda: pin(LOCK).state is False)
        await asyncio.sleep(0.05)
        assert levels(LOCK).count(True) == 2  # each transition once, no flapping
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        site.close()
        conn.close()
        st.close()
