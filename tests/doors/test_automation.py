"""Modes drive the door hardware (gpiozero MockFactory, real SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edged.access import modes
from edged.config import Config
from edged.decide.policy import SITE
from edged.doors import automation
from edged.store import events as store
from tests.doorfix import LOCK, build, levels, pin
from tests.timefix import FakeClock, until

pytestmark = pytest.mark.anyio
UTC = ZoneInfo("UTC")


async def test_free_access_holds_and_lockdown_locks(
    door_cfg: Config, fake_clock: FakeClock
) -> None:
    st = store.Store(door_cfg.storage.database_path)
    site = build(door_cfg, st, fake_clock)
    conn = store.connect(st.path)
    task = asyncio.create_task(automation.run(site, st.db.conn, UTC, fake_clock, interval=2.0))

    async def next_pass() -> None:
        """One more read of the modes: the loop is waiting on the clock, move it on."""
        await until(waiting)
        fake_clock.advance(2.0)
        await until(waiting)  # the pass ran and waits again

    def waiting() -> bool:
        return fake_clock.next_due() == fake_clock.monotonic() + 2.0

    try:
        await next_pass()
        assert pin(LOCK).state is False
        modes.switch(conn, "lobby", "free_access", on=True, by="test")
        await next_pass()
        assert pin(LOCK).state is True
        modes.switch(conn, SITE, "lockdown", on=True, by="test")
        await next_pass()
        assert pin(LOCK).state is False and site.lockdown
        modes.switch(conn, SITE, "lockdown", on=False, by="test")
        await next_pass()
        assert pin(LOCK).state is True  # free access resumes
        modes.switch(conn, "lobby", "free_access", on=False, by="test")
        await next_pass()
        assert pin(LOCK).state is False
        for _ in range(3):
            await next_pass()
        assert levels(LOCK).count(True) == 2  # each transition once, no flapping
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        site.close()
        conn.close()
        st.close()


async def test_sync_follows_a_free_access_schedule_on_a_fake_clock(
    door_cfg: Config,
) -> None:
    from datetime import datetime

    from edged.access import people

    st = store.Store(door_cfg.storage.database_path)
    site = build(door_cfg, st)
    conn = store.connect(st.path)
    doc = {
        "schedules": [{"id": "day", "periods": [{"days": "mon", "start": "08:00", "end": "18:00"}]}]
    }
    people.apply_document(conn, people.parse_document(doc, UTC), replace=False)
    modes.switch(conn, "lobby", "free_access", on=True, by="test", schedule="day")
    monday = datetime(2026, 11, 30, tzinfo=UTC)
    at = {h: monday.replace(hour=h).timestamp() for h in (7, 9, 19)}
    try:
        automation.sync(site, st.db.conn, UTC, at[7])
        assert pin(LOCK).state is False
        automation.sync(site, st.db.conn, UTC, at[9])
        assert pin(LOCK).state is True
        automation.sync(site, st.db.conn, UTC, at[9])  # no transition: nothing done twice
        automation.sync(site, st.db.conn, UTC, at[19])
        assert pin(LOCK).state is False
        assert levels(LOCK).count(True) == 1
    finally:
        site.close()
        conn.close()
        st.close()


async def test_run_applies_the_file_before_its_first_wait_and_survives_bad_reads(
    door_cfg: Config,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    st = store.Store(door_cfg.storage.database_path)
    site = build(door_cfg, st)
    conn = store.connect(st.path)
    modes.switch(conn, SITE, "lockdown", on=True, by="test")  # while "the daemon was down"
    empty = sqlite3.connect(tmp_path / "empty.db")  # no modes table: every read fails
    tasks = [
        asyncio.create_task(automation.run(site, st.db.conn, UTC, interval=3600)),
        asyncio.create_task(automation.run(site, empty, UTC, interval=3600)),
    ]
    try:
        await asyncio.sleep(0)  # one step of each task: the first pass, nothing waited for
        assert site.lockdown is True  # in force before anything else ran
        assert "cannot read modes, doors keep their state" in caplog.text
        assert site.lockdown is True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        empty.close()
        site.close()
        conn.close()
        st.close()
