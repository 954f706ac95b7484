"""Doors on gpiozero's MockFactory: pins' levels and timing asserted, inputs driven as wires are.

Time is a fake clock (the ``rig`` fixture, tests/doors/conftest.py): a test moves it on and the
door's timers (settle, unlock, held open) and the max-on guard see exactly that much time pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.cli import main as cli
from edged.config import Config
from edged.doors import control as doors
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from tests.conftest import LiveDaemon, asgi_client, auth_request
from tests.doorfix import (
    BOUNCE,
    CONTACT,
    DOOR_SERIAL,
    FIRE,
    HELD,
    LOCK,
    MAX_ON,
    REX,
    SIREN,
    UNLOCK,
    add_person,
    build,
    doors_toml,
    elapse,
    flush,
    levels,
    locked_level,
    log_actions,
    pin,
    wire_idle,
    wire_inputs,
)
from tests.timefix import FakeClock, turn, until

pytestmark = pytest.mark.anyio

# ----- no glitches ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "active_high"),
    [("fail_secure", True), ("fail_secure", False), ("fail_safe", True), ("fail_safe", False)],
)
async def test_start_stop_crash_restart_never_leave_locked_level(
    make_config: Callable[..., Config], mock_factory: MockFactory, kind: str, active_high: bool
) -> None:
    locked = locked_level(kind, active_high)
    wire_idle(lock_level=locked)  # the hardware's pull resistor holds the relay off/on
    cfg = make_config(doors_toml(kind, active_high))
    first = build(cfg, None)
    assert pin(LOCK).state == locked and pin(LOCK).function == "output"
    first.close()  # a clean stop
    second = build(cfg, None)
    # a crash: the process is gone without closing anything; the line keeps its level
    second.guard.stop()
    for door in second.doors.values():
        for device in (door.lock.device, door.contact.device, door.rex.device):  # type: ignore[union-attr]
            mock_factory.release_all(device)
    for device in (second.siren.output.device, second.fire_input.device):  # type: ignore[union-attr]
        mock_factory.release_all(device)
    third = build(cfg, None)
    third.close()
    assert set(levels(LOCK)) == {locked}, levels(LOCK)
    assert set(levels(SIREN)) == {False}


async def test_mock_mode_logs_every_output_change(
    rig: tuple[doors.Doors, Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    site, _ = rig
    caplog.set_level("INFO", logger="edged.doors.gpio")
    site.command("lobby", "open", "test")
    site.command("lobby", "lock", "test")
    lines = [r.getMessage() for r in caplog.records if "GPIO17" in r.getMessage()]
    assert any("-> high" in line for line in lines) and any("-> low" in line for line in lines)


# ----- decisions ------------------------------------------------------------------------------


async def test_live_grant_unlocks_for_unlock_time(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, rec = rig
    async with asgi_client(create_app(rec)) as client:
        answer = await client.post("/auth", json=auth_request(serial=DOOR_SERIAL))
    assert answer.json()["data"]["pass"] is True
    assert pin(LOCK).state is True  # unlocked by the time the answer left
    await elapse(fake_clock, UNLOCK - 0.01)
    assert pin(LOCK).state is True
    assert site.status()["doors"][0]["unlock_remaining"] == pytest.approx(0.01)
    await elapse(fake_clock, 0.01)
    assert pin(LOCK).state is False
    door = site.status()["doors"][0]
    assert door["last_decision"]["decision"] == "pass" and door["locked"] is True
    flush(site)
    assert log_actions(rec.store.path)[:3] == ["grant", "unlock", "lock"]


async def test_replayed_duplicate_spoofed_unknown_never_move_a_pin(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, rec = rig
    live = auth_request(serial=DOOR_SERIAL)
    async with asgi_client(create_app(rec)) as client:
        assert (await client.post("/auth", json=live)).json()["data"]["pass"] is True
        await elapse(fake_clock, UNLOCK)
        assert pin(LOCK).state is False
        pin(LOCK).clear_states()
        stale = auth_request(serial=DOOR_SERIAL, ts=time.time() - 3600)
        ahead = auth_request(serial=DOOR_SERIAL, ts=time.time() + 3600)
        undated = {k: v for k, v in auth_request(serial=DOOR_SERIAL).items() if k != "timestamp"}
        for body in (live, stale, ahead, undated):  # the duplicate gets its first answer again
            await client.post("/auth", json=body)
        spoofed = await client.post("/auth", json=live, headers={"sn": "SOMEONE-ELSE"})
        unknown = await client.post("/auth", json=auth_request(serial="UNKNOWN99"))
        assert spoofed.status_code == 403 and unknown.status_code == 403
        await turn()  # whatever the listeners were handed has run (time stands still)
    assert levels(LOCK) == [False]
    assert site.doors["lobby"].pulse_end is None


async def test_denied_decision_is_shown_and_does_not_unlock(
    rig: tuple[doors.Doors, Receiver],
) -> None:
    site, rec = rig
    async with asgi_client(create_app(rec)) as client:
        await client.post("/auth", json=auth_request(serial=DOOR_SERIAL, user_id="nobody"))
    assert levels(LOCK) == [False]
    assert site.status()["doors"][0]["last_decision"]["reason"] == "unknown_person"


@pytest.mark.parametrize("option", [False, True])
async def test_terminal_pass_push_opens_only_when_configured(
    make_config: Callable[..., Config], mock_factory: MockFactory, option: bool
) -> None:
    from tests.conftest import recognition

    wire_idle()
    extra = doors_toml() + ""
    if option:
        extra = extra.replace('name = "lobby"\n', 'name = "lobby"\nopen_on_terminal_pass = true\n')
    cfg = make_config(extra)
    st = store.Store(cfg.storage.database_path)
    site = build(cfg, st)
    rec = Receiver(cfg, st)
    rec.listeners.append(site.on_record)
    try:
        async with asgi_client(create_app(rec)) as client:
            await client.post("/eventRcv", json=recognition(serial=DOOR_SERIAL))
        assert pin(LOCK).state is option
    finally:
        site.close()
        st.close()


# ----- the rules, whatever happens in whatever order -----------------------------------------

STEPS = st.lists(
    st.sampled_from(
        [
            "grant",
            "rex",
            "opened",
            "closed",
            "fire_on",
            "fire_off",
            "lockdown_on",
            "lockdown_off",
            "hold",
            "release",
            "open",
            "lock",
            "timer",
        ]
    ),
    max_size=25,
)


def step(site: doors.Doors, name: str) -> None:
    """One event, as the loop would deliver it (timers fire only when asked to)."""
    door = site.doors["lobby"]
    actions: dict[str, Callable[[], Any]] = {
        "grant": lambda: door.grant("p", {}),
        "rex": lambda: door.rex_changed(True),
        "opened": lambda: door.contact_changed(False),
        "closed": lambda: door.contact_changed(True),
        "fire_on": lambda: site._fire_changed(False),  # panel contact open: pin pulled high
        "fire_off": lambda: site._fire_changed(True),
        "lockdown_on": lambda: site.set_lockdown(True, "p"),
        "lockdown_off": lambda: site.set_lockdown(False, "p"),
        "hold": lambda: site.hold("lobby", "schedule"),
        "release": lambda: site.release("lobby", "schedule"),
        "lock": lambda: site.command("lobby", "lock", "p"),
        "timer": lambda: door._pulse_over() if door.pulse_end is not None else None,
    }
    if name == "open":
        with contextlib.suppress(doors.DoorError):  # refused under lockdown
            site.command("lobby", "open", "p")
    else:
        actions[name]()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_lock_level_always_follows_the_rules(door_cfg: Config, steps: list[str]) -> None:
    loop = asyncio.new_event_loop()  # not running: timers are driven by the "timer" step
    site = doors.build(door_cfg, None)
    assert site is not None
    wire_inputs()
    site.attach(loop)
    try:
        door = site.doors["lobby"]
        for name in steps:
            step(site, name)
            unlocked = pin(LOCK).state  # fail-secure, active-high: high = unlocked
            assert unlocked == door.lock.on
            if site.fire:
                assert unlocked, steps
            elif site.lockdown:
                assert unlocked == (door.pulse_kind == "egress"), steps
            elif door.holds or door.pulse_end is not None:
                assert unlocked, steps
            else:
                assert not unlocked, steps
            if "forced" in door.alarms:
                assert pin(SIREN).state is True
    finally:
        site.close()
        loop.close()


# ----- inputs ---------------------------------------------------------------------------------


async def test_forced_open_raises_alarm_and_siren_until_closed(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, rec = rig
    pin(CONTACT).drive_high()  # the contact opens with no grant and no exit button
    await elapse(fake_clock, BOUNCE)
    assert [a["kind"] for a in site.status()["doors"][0]["alarms"]] == ["forced"]
    assert pin(SIREN).state is True
    pin(CONTACT).drive_low()
    await elapse(fake_clock, BOUNCE)
    assert pin(SIREN).state is False
    assert site.doors["lobby"].alarms == {}
    flush(site)
    actions = log_actions(rec.store.path)
    assert actions[actions.index("alarm") :] == ["alarm", "closed", "alarm_cleared"]


async def test_contact_bounce_is_filtered(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, _ = rig
    contact = pin(CONTACT)
    for _ in range(5):  # chatter shorter than bounce_time, ending closed
        contact.drive_high()
        await elapse(fake_clock, BOUNCE / 4)
        contact.drive_low()
        await elapse(fake_clock, BOUNCE / 4)
    await elapse(fake_clock, BOUNCE * 4)
    assert site.doors["lobby"].alarms == {} and pin(SIREN).state is False
    contact.drive_high()  # now it really opens
    await elapse(fake_clock, BOUNCE * 0.9)
    assert site.doors["lobby"].alarms == {}  # not settled yet
    await elapse(fake_clock, BOUNCE * 0.1)
    assert "forced" in site.doors["lobby"].alarms


async def test_grant_shunts_forced_then_held_open_then_relock_on_close(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, _ = rig
    door = site.doors["lobby"]
    door.grant("test", {})
    pin(CONTACT).drive_high()
    await elapse(fake_clock, BOUNCE)
    assert door.contact_state == "open"
    assert "forced" not in door.alarms and pin(SIREN).state is False
    await elapse(fake_clock, HELD - 0.01)
    assert "held_open" not in door.alarms
    await elapse(fake_clock, 0.01)
    assert "held_open" in door.alarms
    assert pin(SIREN).state is False
    door.grant("test", {})  # someone else passes while it stands open
    assert pin(LOCK).state is True
    pin(CONTACT).drive_low()
    await elapse(fake_clock, BOUNCE)
    assert door.contact_state == "closed"
    assert door.alarms == {}
    assert pin(LOCK).state is False  # relock on close, before unlock_time ran out


async def test_rex_unlocks_for_egress_even_in_lockdown(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, rec = rig
    site.set_lockdown(True, "test")
    pin(REX).drive_low()  # pressed: the button pulls the pin to ground
    await elapse(fake_clock, BOUNCE)
    assert pin(LOCK).state is True
    pin(REX).drive_high()
    pin(CONTACT).drive_high()
    await elapse(fake_clock, BOUNCE)
    assert site.doors["lobby"].contact_state == "open"
    assert site.doors["lobby"].alarms == {}
    flush(site)
    assert "egress" in log_actions(rec.store.path)


async def test_lockdown_refuses_grants_and_manual_open(rig: tuple[doors.Doors, Receiver]) -> None:
    site, _ = rig
    site.hold("lobby", "schedule:free-access")
    assert pin(LOCK).state is True
    site.set_lockdown(True, "policy")
    assert pin(LOCK).state is False
    assert site.doors["lobby"].grant("test", {}) is False
    with pytest.raises(doors.DoorError, match="lockdown"):
        site.command("lobby", "open", "test")
    site.set_lockdown(False, "policy")
    assert pin(LOCK).state is True  # the schedule's hold is back in force
    site.release("lobby", "schedule:free-access")
    assert pin(LOCK).state is False


async def test_fire_releases_over_lockdown_and_restores(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, rec = rig
    site.set_lockdown(True, "policy")
    pin(FIRE).drive_high()  # the fire panel's contact opens
    await elapse(fake_clock, BOUNCE)
    assert pin(LOCK).state is True
    await elapse(fake_clock, MAX_ON + 0.3)  # a hold: the guard must not trip
    site.guard.check()
    assert pin(LOCK).state is True and site.guard.trips == 0
    assert site.status()["fire"] is True
    pin(FIRE).drive_low()
    await elapse(fake_clock, BOUNCE)
    assert pin(LOCK).state is False
    flush(site)
    conn = sqlite3.connect(rec.store.path)
    site_rows = [r[0] for r in conn.execute("SELECT action FROM door_log WHERE door = ''")]
    conn.close()
    assert "fire_on" in site_rows and "fire_off" in site_rows


async def test_max_on_guard_trips_repeated_opens(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, rec = rig
    started = fake_clock.monotonic()
    for _ in range(100):
        site.command("lobby", "open", "test")  # each extends the timed unlock
        await elapse(fake_clock, UNLOCK / 3)
        site.guard.check()  # what the guard thread does every 50 ms (it may have done it)
        if site.guard.trips:
            break
    assert site.guard.trips == 1
    assert pin(LOCK).state is False
    assert MAX_ON < fake_clock.monotonic() - started <= MAX_ON + UNLOCK / 3
    await until(lambda: site.doors["lobby"].why == "guard")  # the news reached the loop
    flush(site)
    assert "guard_trip" in log_actions(rec.store.path)


async def test_manual_hold_outlasts_the_guard_and_lock_ends_it(
    rig: tuple[doors.Doors, Receiver], fake_clock: FakeClock
) -> None:
    site, _ = rig
    site.command("lobby", "hold", "test")
    await elapse(fake_clock, MAX_ON + 0.2)
    site.guard.check()
    assert pin(LOCK).state is True and site.guard.trips == 0
    state = site.command("lobby", "lock", "test")
    assert state["locked"] is True and state["holds"] == {}
    assert pin(LOCK).state is False


# ----- terminal alarms ------------------------------------------------------------------------


def alarm(code: int, status: int, trace: str) -> dict[str, Any]:
    data = {
        "deviceSN": DOOR_SERIAL,
        "trace_id": trace,
        "code": code,
        "status": status,
        "event_time": int(time.time() * 1000),
        "description": "",
        "alarm_photo": "",
    }
    return {"type": 1, "data": data}


async def test_terminal_alarms_follow_raise_and_clear(rig: tuple[doors.Doors, Receiver]) -> None:
    site, _ = rig
    door = site.doors["lobby"]
    async with asgi_client(create_app(rec := rig[1])) as client:
        await client.post("/eventRcv", json=alarm(10001, 1, "t-1"))  # tamper -> siren
        assert pin(SIREN).state is True and len(door.alarms) == 1
        await client.post("/eventRcv", json=alarm(20003, 1, "t-2"))  # fire -> release
        assert pin(LOCK).state is True
        await client.post("/eventRcv", json=alarm(10001, 3, "t-1"))
        assert pin(SIREN).state is False
        await client.post("/eventRcv", json=alarm(20003, 3, "t-2"))
        assert pin(LOCK).state is False and door.alarms == {}
        # a replayed raise (already stored) acts on nothing
        pin(LOCK).clear_states()
        await client.post("/eventRcv", json=alarm(20003, 1, "t-2"))
    assert levels(LOCK) == [False]
    assert rec.stats.answered["duplicate"] == 1


async def test_untraceable_alarm_never_holds_a_door(rig: tuple[doors.Doors, Receiver]) -> None:
    site, rec = rig
    body = alarm(20003, 1, "")
    del body["data"]["trace_id"]
    async with asgi_client(create_app(rec)) as client:
        assert (await client.post("/eventRcv", json=body)).status_code == 200
    assert levels(LOCK) == [False] and site.doors["lobby"].holds == {}
    flush(site)
    assert log_actions(rec.store.path)[-1] == "alarm"


async def test_door_log_is_pruned_by_age(rig: tuple[doors.Doors, Receiver]) -> None:
    site, rec = rig
    site.command("lobby", "open", "test")
    flush(site)
    audit = site.audit
    assert isinstance(audit, doors.AuditLog)
    assert await audit.prune(time.time() - 3600) == 0
    assert log_actions(rec.store.path)
    assert await audit.prune(time.time() + 1) > 0
    assert log_actions(rec.store.path) == []


# ----- the daemon, the admin API and the CLI --------------------------------------------------


def test_daemon_admin_api_and_cli(
    door_cfg: Config,
    start_live: Callable[[Config], LiveDaemon],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    live = start_live(door_cfg)
    wire_inputs()  # the mock's pull-ups won until now: the fire input looked active
    site = live.daemon.doors
    assert site is not None
    deadline = time.monotonic() + 5
    while (site.fire or pin(LOCK).state) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pin(LOCK).state is False
    add_person(door_cfg.storage.database_path)
    url = f"{live.admin_url}/api/v1/doors"
    assert httpx.post(f"{url}/lobby/open").status_code == 401
    auth = {"authorization": "Bearer test-token"}
    assert httpx.post(f"{url}/nowhere/open", headers=auth).status_code == 404
    assert httpx.post(f"{url}/lobby/dance", headers=auth).status_code == 400
    answer = httpx.post(f"{live.url}/auth", json=auth_request(serial=DOOR_SERIAL)).json()
    assert answer["data"]["pass"] is True and pin(LOCK).state is True
    state = httpx.get(url).json()
    assert state["doors"][0]["last_decision"]["decision"] == "pass"
    assert httpx.get(f"{live.admin_url}/readyz").json()["checks"]["doors"]["ok"] is True

    cfg_file = tmp_path / "cli.toml"
    text = (
        f'[admin]\nlisten = ["127.0.0.1:{live.daemon.admin_port}"]\ntoken = "test-token"\n'
        f'[storage]\nstate_dir = "{tmp_path / "unused"}"\n'
    )
    cfg_file.write_text(text)
    assert cli.main(["door", "hold", "lobby", "-c", str(cfg_file), "--source", "guard-desk"]) == 0
    assert "UNLOCKED" in capsys.readouterr().out
    assert cli.main(["status", "-c", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "lobby" in out and "holds=manual" in out
    assert cli.main(["door", "lock", "lobby", "-c", str(cfg_file)]) == 0
    assert pin(LOCK).state is False
    assert cli.main(["door", "open", "nowhere", "-c", str(cfg_file)]) == 65
    log = httpx.get(f"{url}/log", params={"door": "lobby"}).json()["entries"]
    holds = [e for e in log if e["action"] == "hold"]
    assert holds and holds[0]["source"].startswith("guard-desk@127.0.0.1")

    pin(LOCK).clear_states()
    live.stop()
    assert levels(LOCK) == [False]
    conn = sqlite3.connect(door_cfg.storage.database_path)
    last = conn.execute("SELECT action, detail FROM door_log ORDER BY id DESC LIMIT 1").fetchone()
    conn.close()
    assert last[0] == "stop" and json.loads(last[1]) == {}
