"""Terminal clocks: measured, set (NTP or local_time), zoned and alarmed, over the simulator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from edged import config
from edged.sim import api as simapi
from edged.sim.terminal import SimulatedTerminal
from edged.store import events as store
from edged.terminals import client as terminals
from edged.terminals.clocksync import ClockSync, zone_for
from edged.terminals.reconciler import Reconcilers, TerminalReconciler
from tests.conftest import LiveDaemon, grant_person
from tests.simfix import Running, free_port, make_sim, managed_config
from tests.timefix import FakeClock, until

pytestmark = pytest.mark.anyio
LOG = "edged.terminals.clocksync"


def clock_table(mode: str, zone: str = "Europe/Berlin", **keys: object) -> str:
    lines = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    return f'[site]\ntimezone = "{zone}"\n[terminal_clock]\nmode = "{mode}"\n{lines}'


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("zone", "when", "expected"),
    [
        ("Europe/Berlin", "2027-01-15T12:00", (1, 0)),
        ("Europe/Berlin", "2027-07-15T12:00", (2, 0)),
        ("UTC", "2027-07-15T12:00", (0, 0)),
        ("America/New_York", "2027-01-15T12:00", (-5, 0)),
        ("Asia/Kolkata", "2027-01-15T12:00", (5, 30)),  # the whole hour below: 30 min behind
        ("Asia/Kathmandu", "2027-01-15T12:00", (5, 45)),
        ("America/St_Johns", "2027-01-15T12:00", (-4, 30)),  # -3:30: -4, never ahead
        ("Australia/Adelaide", "2027-01-15T12:00", (10, 30)),  # +10:30 in its summer
        ("Pacific/Kiritimati", "2027-01-15T12:00", (12, 120)),  # +14: the terminal's largest
    ],
)
def test_zone_for_is_the_whole_hour_at_or_below(
    zone: str, when: str, expected: tuple[int, int]
) -> None:
    assert zone_for(ZoneInfo(zone), at(when)) == expected


async def test_manual_mode_sets_a_skewed_clock_and_the_zone(
    sim: SimulatedTerminal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.config.skew = 40.0  # the terminal runs 40 s ahead: everything it sends looks replayed
    cfg = managed_config(tmp_path / "state", sim, extra=clock_table("manual"))
    caplog.set_level(logging.INFO, LOG)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
        clock = run.rec.report()["clock"]
        assert abs(sim.config.skew) < 1.0 and sim.config.manual_mode is True
        assert clock["state"] == "in-step" and abs(clock["drift"]) < 1.0 and clock["sets"] == 1
        wanted = zone_for(ZoneInfo("Europe/Berlin"), sim.clock.time())[0]
        assert sim.config.time_zone == wanted == clock["time_zone"] == clock["wanted_zone"]
        run.rec.trigger("test")  # in step now: a check writes nothing
        await until(lambda: sim.requests["GET /v1/device/time"] >= 3)
        await until(lambda: run.rec.health.state == "registered")
        assert sim.config.posts["time"] == 1
    finally:
        await run.stop()
    said = [r.getMessage() for r in caplog.records if r.name == LOG]
    assert len(said) == 1 and said[0].startswith("terminal lobby: clock set (+40.")
    assert f"time zone UTC{wanted:+d} (was 8)" in said[0]


async def test_measure_mode_alarms_once_and_clears_once(
    sim: SimulatedTerminal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.config.skew = -20.0  # past half of receiver.stale_after (30 s)
    cfg = managed_config(tmp_path / "state", sim, extra=clock_table("measure"))
    st = store.Store(cfg.storage.database_path)
    group = Reconcilers(cfg, st, {})
    caplog.set_level(logging.INFO, LOG)
    rec = group.items["lobby"]
    task = asyncio.create_task(group.run())
    try:
        await until(lambda: rec.clock_sync.alarm)
        assert sim.config.posts["time"] == 0  # measure sets nothing
        names = [check()[0] for check in group.hooks().checks]
        assert names == ["terminals", "terminal_clocks"]
        _, ok, detail = group.clock_readiness()
        assert not ok and detail["drifting"] == ["lobby"] and detail["drift"]["lobby"] < -19
        group.resubscribe("lobby")  # still off: no second warning
        await until(lambda: sim.requests["GET /v1/device/time"] >= 2)
        sim.config.skew = 0.0
        group.resubscribe("lobby")
        await until(lambda: group.clock_readiness()[1])
        assert sim.config.time_zone == 8  # measure leaves the zone alone too
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        st.close()
    ours = [r for r in caplog.records if r.name == LOG]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.INFO]
    assert "clock is -20." in ours[0].getMessage() and "past 15 s" in ours[0].getMessage()
    assert ours[1].getMessage().startswith("terminal lobby: clock back in step")


async def test_ntp_mode_sets_the_server_and_alarms_when_it_does_not_help(
    sim: SimulatedTerminal, tmp_path: Path
) -> None:
    sim.config.manual_mode = True
    sim.config.skew = 3.0
    extra = clock_table("ntp", ntp_server="192.168.1.10")
    run = Running(managed_config(tmp_path / "state", sim, extra=extra))
    try:
        await until(lambda: run.rec.health.state == "registered")
        old = sim.firmware.version == "1.0"
        assert sim.config.server_address == ("http://192.168.1.10" if old else "192.168.1.10")
        assert sim.config.manual_mode is False and sim.config.skew == 0.0  # NTP answered
        assert run.rec.clock_sync.health.ntp_server == "192.168.1.10"
        assert not run.rec.clock_sync.alarm
        # the terminal cannot reach the NTP server and drifts: edged alarms, sets no local_time
        sim.config.ntp_reachable = False
        sim.config.skew = 30.0
        run.rec.trigger("test")
        await until(lambda: run.rec.clock_sync.alarm)
        assert sim.config.posts["time"] == 1 and sim.config.manual_mode is False
    finally:
        await run.stop()


async def test_an_implausible_gateway_clock_is_never_copied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_sim(tmp_path, skew=25.0)
    await sim.start()
    cfg = managed_config(tmp_path / "state", sim, extra=clock_table("manual"))
    caplog.set_level(logging.INFO, LOG)
    run = Running(cfg, plausible=lambda now: False)
    try:
        await until(lambda: run.rec.health.state == "registered")
        assert sim.config.skew == 25.0 and sim.config.posts["time"] == 0  # untouched
        assert run.rec.clock_sync.alarm
        run.rec.trigger("test")
        await until(lambda: sim.requests["GET /v1/device/time"] >= 2)
        await until(lambda: run.rec.health.state == "registered")
    finally:
        await run.stop()
        await sim.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "terminal lobby: neither clock nor time zone set from the gateway: its own clock is "
        "implausible (check NTP on the gateway)"
    ]


async def test_a_clock_refused_is_recorded_and_does_not_stop_the_registration(
    sim: SimulatedTerminal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.config.get_time = lambda body: (None, 500, "busy")  # type: ignore[method-assign]
    cfg = managed_config(tmp_path / "state", sim, extra=clock_table("manual"))
    caplog.set_level(logging.INFO, LOG)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
        assert "busy" in (run.rec.clock_sync.health.error or "")
        assert run.rec.clock_sync.health.state == "unknown"
        run.rec.trigger("test")
        await until(lambda: sim.requests["GET /v1/device/time"] >= 2)
    finally:
        await run.stop()
    assert [r.levelno for r in caplog.records if r.name == LOG] == [logging.WARNING]


async def test_the_zone_follows_a_dst_change(tmp_path: Path) -> None:
    # 2027-03-28 01:00 UTC: Europe/Berlin goes from +1 to +2
    clock = FakeClock(wall=at("2027-03-28T00:59:00"))
    sim = make_sim(tmp_path, clock=clock)
    await sim.start()
    cfg = managed_config(tmp_path / "state", sim, extra=clock_table("manual"))
    st = store.Store(cfg.storage.database_path)
    rec = TerminalReconciler(cfg, cfg.terminals[0], st, {}, clock=clock)
    client = terminals.client_for(cfg, cfg.terminals[0], st.reader)
    try:
        sync = rec.clock_sync
        assert isinstance(sync, ClockSync)
        await sync.check(client)
        assert sim.config.time_zone == 1 and not sync.zone_due(clock.time())
        assert rec._signs() is None
        clock.advance(60.0)  # 01:00 UTC: summer time
        assert sync.zone_due(clock.time())
        assert rec._signs() == "the site's UTC offset changed (DST)"
        await sync.check(client)
        assert sim.config.time_zone == 2 and not sync.zone_due(clock.time())
        assert sim.config.posts["time"] == 2 and abs(sync.health.drift or 0.0) < 1.0
        clock.advance(240 * 86400)  # late November: back to +1
        assert sync.zone_due(clock.time())
        await sync.check(client)
        assert sim.config.time_zone == 1
    finally:
        await client.aclose()
        st.close()
        await sim.stop()


async def test_round_trip_is_accounted_for(tmp_path: Path) -> None:
    clock = FakeClock(wall=at("2027-05-01T10:00:00"))
    sim = make_sim(tmp_path, clock=clock)
    await sim.start()
    cfg = managed_config(tmp_path / "state", sim, extra=clock_table("measure"))
    st = store.Store(cfg.storage.database_path)
    client = terminals.client_for(cfg, cfg.terminals[0], st.reader)
    original = sim.config.get_time

    def slow(body: dict[str, object]) -> tuple[object, int, str]:
        clock.advance(2.0)  # the answer is made 2 s after the request left, and takes 2 s back
        answer = original(body)
        clock.advance(2.0)
        return answer

    sim.config.get_time = slow  # type: ignore[method-assign]
    try:
        sync = ClockSync(cfg, "lobby", clock)
        await sync.check(client)
        assert sync.health.round_trip == 4.0 and sync.health.drift == 0.0
        assert sync.health.state == "in-step"
    finally:
        await client.aclose()
        st.close()
        await sim.stop()


async def test_a_reboot_is_followed_by_a_clock_check(tmp_path: Path) -> None:
    sim = make_sim(tmp_path)
    await sim.start()
    run = Running(managed_config(tmp_path / "state", sim, extra=clock_table("manual")))
    try:
        await until(lambda: run.rec.health.state == "registered")
        sim.config.skew = 100.0  # its RTC lost time while it was away
        await sim.reboot(0.3)
        await until(lambda: run.rec.clock_sync.health.sets == 2)
        assert abs(sim.config.skew) < 1.0
    finally:
        await run.stop()
        await sim.stop()


def test_status_names_a_drifting_clock() -> None:
    line = {"serial": "S1", "name": "lobby", "state": "registered"}
    drifting = {**line, "clock": {"state": "drifting", "drift": -20.26}}
    assert "CLOCK" not in "\n".join(terminals.status_section([line]))
    assert "CLOCK -20.3 s" in "\n".join(terminals.status_section([drifting]))


async def test_a_refused_write_still_alarms_and_is_not_retried_at_every_probe(
    tmp_path: Path,
) -> None:
    clock = FakeClock(wall=at("2027-03-28T00:59:00"))
    sim = make_sim(tmp_path, clock=clock)
    await sim.start()
    cfg = managed_config(tmp_path / "state", sim, extra=clock_table("manual"))
    st = store.Store(cfg.storage.database_path)
    client = terminals.client_for(cfg, cfg.terminals[0], st.reader)
    try:
        sync = ClockSync(cfg, "lobby", clock)
        await sync.check(client)
        assert sim.config.time_zone == 1 and sync.health.state == "in-step"
        sim.config.post_time = lambda body: (None, 500, "busy")  # type: ignore[method-assign]
        sim.config.skew = 60.0
        clock.advance(120.0)  # summer time, and a clock a minute ahead
        assert sync.zone_due(clock.time())
        await sync.check(client)
        assert sync.alarm and "busy" in (sync.health.error or "")
        assert not sync.zone_due(clock.time())  # asked once for this offset, not at every probe
        assert not sync.zone_due(clock.time() + 3600)
        del sim.config.post_time
        await sync.check(client)  # the periodic check tries again
        assert sim.config.time_zone == 2 and not sync.alarm and sync.health.error is None
    finally:
        await client.aclose()
        st.close()
        await sim.stop()


async def test_a_drifting_terminal_is_denied_until_its_clock_is_right(
    tmp_path: Path, start_live: Callable[[config.Config], LiveDaemon]
) -> None:
    sim = make_sim(tmp_path, skew=-60.0)  # a minute behind: past receiver.stale_after (30 s)
    await sim.start()
    try:
        cfg = managed_config(
            tmp_path / "state",
            sim,
            gateway_port=free_port(),
            admin_port=free_port(),
            extra=clock_table("measure"),
        )
        live = await asyncio.to_thread(start_live, cfg)
        grant_person(cfg.storage.database_path)
        fresh = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=fresh) as http:

            async def clocks_ready() -> bool | None:
                checks = (await http.get(f"{live.admin_url}/readyz")).json()["checks"]
                check = checks.get("terminal_clocks", {})
                measured = (check.get("drift") or {}).get("lobby") is not None
                return bool(check["ok"]) if measured else None

            async def asks() -> bool:
                body = simapi.auth_request(sim.settings.serial, "e-1", "Ann", sim.config.now())
                answer = (await http.post(f"{live.url}/auth", json=body)).json()
                return bool(answer["data"]["pass"])

            for _ in range(250):
                if (await clocks_ready()) is not None:
                    break
                await asyncio.sleep(0.02)
            assert await clocks_ready() is False  # the alarm ...
            assert await asks() is False  # ... is what the person at the door meets
            sim.config.skew = 0.0  # its clock put right
            assert await asks() is True
    finally:
        await sim.stop()
