"""The reconciler against the simulator over real HTTPS on loopback."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from edged.receive.receiver import TerminalSeen
from edged.sim.terminal import SimulatedTerminal
from edged.store import events as store
from edged.terminals import client as terminals
from edged.terminals import tlspin
from edged.terminals.reconciler import Reconcilers, TerminalReconciler
from tests.simfix import Running, make_sim, managed_config
from tests.timefix import FakeClock, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def test_first_registration(sim: SimulatedTerminal, state: Path) -> None:
    cfg = managed_config(state, sim, gateway_port=8090)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
        assert sim.state.subscription == {
            "event_dest": "http://127.0.0.1:8090/eventRcv",
            "enabled": True,
        }
        readable = sim.firmware.read_back != "null"
        assert run.rec.health.registration == ("confirmed" if readable else "asserted")
        assert run.rec.health.auth_mode == 0  # remote auth not asked for: left alone
        assert sim.requests["POST /v1/auth/login"] == 1
    finally:
        await run.stop()


async def test_old_firmware_cannot_confirm_and_is_rewritten(tmp_path: Path, state: Path) -> None:
    sim = make_sim(tmp_path, firmware="old")
    await sim.start()
    run = Running(managed_config(state, sim))
    try:
        await until(lambda: run.rec.health.state == "registered")
        assert run.rec.health.registration == "asserted"
        run.rec.trigger("test")
        await until(lambda: sim.requests["POST /v1/event/subscribe"] == 2)
    finally:
        await run.stop()
        await sim.stop()


async def test_remote_auth_read_modify_write_keeps_other_fields(
    sim: SimulatedTerminal, state: Path
) -> None:
    sim.state.functions.update(record_image=False, stranger_record=False, liveness=False)
    cfg = managed_config(state, sim, remote_auth=True, remote_auth_fallback_minutes=5)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
    finally:
        await run.stop()
    functions = sim.state.functions
    assert functions["auth_mode"] == 1
    assert functions["remote_authentication_address"] == "http://127.0.0.1:8090/auth"
    assert functions["remote_auth_timeout_to_local_auth"] == 5
    assert functions["record_image"] is False
    assert functions["stranger_record"] is False and functions["liveness"] is False
    assert functions["record"] is True and functions["alarm_record"] is True


async def test_reboot_is_noticed_and_registration_restored(
    sim: SimulatedTerminal, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = Running(managed_config(state, sim, remote_auth=True))
    try:
        await until(lambda: run.rec.health.state == "registered")
        caplog.set_level(logging.DEBUG, "edged.terminals.reconciler")
        await sim.reboot(0.3)
        assert sim.state.subscription is None and sim.state.functions["auth_mode"] == 0
        took = await until(lambda: sim.registered and sim.state.functions["auth_mode"] == 1)
        assert took < 3.0
        await until(lambda: run.rec.health.state == "registered")
        assert run.rec.health.registrations == 2
    finally:
        await run.stop()
    ours = [r for r in caplog.records if r.name == "edged.terminals.reconciler"]
    assert [r.getMessage() for r in ours if r.levelno == logging.ERROR] == [
        "terminal lobby is down: it does not answer"
    ]
    assert [r.getMessage() for r in ours if r.levelno == logging.INFO].count(
        "terminal lobby is back: registered and verified"
    ) == 1


async def test_drift_fixed_on_demand(sim: SimulatedTerminal, state: Path) -> None:
    run = Running(managed_config(state, sim))
    try:
        await until(lambda: run.rec.health.state == "registered")
        sim.state.subscription = {"event_dest": "http://elsewhere.invalid/x", "enabled": True}
        run.rec.trigger("on demand")
        await until(lambda: sim.state.subscription["event_dest"].startswith("http://127.0.0.1"))
    finally:
        await run.stop()


async def test_token_expiry_means_login_again(
    tmp_path: Path, state: Path, fake_clock: FakeClock
) -> None:
    # edged asks for 60-minute tokens; the terminal's clock is moved on past them, edged's is not
    sim = make_sim(tmp_path, clock=fake_clock)
    await sim.start()
    run = Running(managed_config(state, sim))
    try:
        await until(lambda: run.rec.health.state == "registered")
        fake_clock.advance(3600)
        run.rec.trigger("test")
        await until(lambda: sim.requests["POST /v1/auth/login"] >= 2)
        await until(lambda: run.rec.health.state == "registered" and run.rec.wake.is_set() is False)
        assert run.rec.health.last_error is None
    finally:
        await run.stop()
        await sim.stop()


async def test_changed_certificate_is_refused_until_trusted_again(
    sim: SimulatedTerminal, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = managed_config(state, sim, tls_fingerprint=None)
    db = store.open_database(cfg.storage.database_path)
    presented = await tlspin.fetch_certificate("127.0.0.1", sim.port)
    terminals.record_pin(db.conn, cfg.terminals[0], presented)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
        logins = sim.requests["POST /v1/auth/login"]
        caplog.set_level(logging.ERROR, "edged.terminals.reconciler")
        await sim.reboot(0.1, new_certificate=True)
        await until(lambda: run.rec.health.state == "untrusted")
        tried = run.rec.health.attempts
        await until(lambda: run.rec.health.attempts >= tried + 3)  # all refused before a request
        assert sim.requests["POST /v1/auth/login"] == logins
        assert not sim.registered
        assert sim.fingerprint in (run.rec.health.last_error or "")
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len([r for r in errors if "untrusted" in r.getMessage()]) == 1
        # the operator re-trusts: the next attempt uses the new pin
        terminals.record_pin(
            db.conn, cfg.terminals[0], await tlspin.fetch_certificate("127.0.0.1", sim.port)
        )
        await until(lambda: run.rec.health.state == "registered")
        assert sim.registered
    finally:
        await run.stop()
        db.conn.close()


async def test_serial_mismatch_is_refused(sim: SimulatedTerminal, state: Path) -> None:
    run = Running(managed_config(state, sim, serial="PS71HD01MC22C09999"))
    try:
        await until(lambda: run.rec.health.state == "serial-mismatch")
        assert "PS71HD01MC22C00014" in (run.rec.health.last_error or "")
        assert not sim.registered
        assert sim.requests["POST /v1/event/subscribe"] == 0
    finally:
        await run.stop()


async def test_backoff_spreads_retries_and_is_capped(tmp_path: Path, state: Path) -> None:
    sim = make_sim(tmp_path)
    await sim.start()
    cfg = managed_config(state, sim, fast=False)  # default backoff: 1 s doubling, 60 s cap
    await sim.stop()  # nobody listens any more: every attempt fails at once
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) >= 40:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    run = Running(cfg, sleep=fake_sleep)
    with pytest.raises(asyncio.CancelledError):
        await run.task
    run.store.close()
    assert len(delays) == 40
    for n, delay in enumerate(delays):
        assert 0 <= delay <= min(60.0, 2.0**n) + 1e-9
    assert len({round(d, 6) for d in delays}) == 40  # jittered: no two alike
    late = delays[10:]
    assert max(late) > 30 and min(late) < 30  # capped at 60 but spread over [0, 60]
    assert run.rec.health.state == "down"


async def test_cancellation_is_clean_mid_backoff_and_mid_watch(
    sim: SimulatedTerminal, state: Path
) -> None:
    run = Running(managed_config(state, sim))
    await until(lambda: run.rec.health.state == "registered")
    asked = sum(sim.requests.values())
    await until(lambda: sum(sim.requests.values()) > asked)  # watching: it probes
    await run.stop()
    cfg = managed_config(state, sim, port=1)  # nothing there: backing off
    run = Running(cfg)
    await until(lambda: run.rec.health.attempts >= 2)
    await run.stop()
    assert not [t for t in asyncio.all_tasks() if "terminal" in t.get_name()]


async def test_reconcilers_run_health_and_readiness(sim: SimulatedTerminal, state: Path) -> None:
    cfg = managed_config(state, sim)
    st = store.Store(cfg.storage.database_path)

    seen: dict[str, TerminalSeen] = {}
    group = Reconcilers(cfg, st, seen)
    task = asyncio.create_task(group.run())
    try:
        assert group.readiness()[1] is False
        await until(lambda: group.readiness()[1])
        health = group.health()[sim.settings.serial]
        assert health["state"] == "registered" and health["event_dest"].endswith("/eventRcv")
        await group.open_door("lobby", 1)
        assert sim.door_log == [1]
        with pytest.raises(KeyError):
            group.resubscribe("nope")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        st.close()
    conn = sqlite3.connect(cfg.storage.database_path)
    assert conn.execute("SELECT COUNT(*) FROM terminal_sync").fetchone()[0] == 1
    conn.close()


async def test_signs_of_drift_from_the_receiver(sim: SimulatedTerminal, state: Path) -> None:
    clock = FakeClock(wall=10_000.0)
    now = [clock.time()]

    def later(seconds: float) -> None:
        clock.advance(seconds)
        now[0] = clock.time()

    seen = {sim.settings.serial: TerminalSeen(sim.settings.serial)}
    cfg = managed_config(state, sim, remote_auth=True)  # heartbeat_timeout 1 s here
    st = store.Store(cfg.storage.database_path)
    try:
        rec = TerminalReconciler(cfg, cfg.terminals[0], st, seen, clock=clock)
        entry = seen[sim.settings.serial]
        rec.health.last_ok = now[0]
        entry.last_heartbeat = now[0]
        assert rec._signs() is None
        later(2)  # no heartbeat for 2 s: one trigger, not one a probe
        assert rec._signs() == "no heartbeat for 1 s"
        assert rec._signs() is None
        entry.last_heartbeat = now[0]  # heartbeats again: armed again
        assert rec._signs() is None
        entry.last_push = now[0]
        assert rec._signs() is None  # the first push seen: nothing to compare with
        later(0.5)
        entry.last_push = now[0]
        entry.last_heartbeat = now[0]
        assert rec._signs() is None  # pushes flowing
        later(5)
        entry.last_push = now[0]
        entry.last_heartbeat = now[0]
        assert rec._signs() == "first push after a silence"
    finally:
        st.close()


async def test_backfill_failure_does_not_block_registration(
    sim: SimulatedTerminal, state: Path
) -> None:
    cfg = managed_config(state, sim)
    run = Running(cfg)
    await until(lambda: run.rec.health.state == "registered")
    await run.stop()
    real = sim.history

    class Broken(list):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("storage failure")

    sim.history = Broken(real)  # /v1/event/records now answers HTTP 500
    sim.state.subscription = None
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered" and sim.registered)
        assert run.rec.health.backfilled == 0 and run.rec._gap
    finally:
        await run.stop()


async def reboots_until_registered(
    sim: SimulatedTerminal, rec: TerminalReconciler, downs: list[float]
) -> list[float]:
    """Reboot ``sim`` once per entry (seconds away); seconds from each return to registration."""
    took = []
    for down in downs:
        count = rec.health.registrations
        await sim.reboot(down)
        back = sim.came_back_at or 0.0
        await until(lambda c=count: rec.health.registrations > c and not rec._gap, timeout=10)
        assert sim.registered and (sim.registered_at or 0.0) > back
        took.append((sim.registered_at or 0.0) - back)
    return took


async def test_every_reboot_is_noticed_on_every_firmware(
    sim: SimulatedTerminal, state: Path
) -> None:
    # probes every 0.5 s: two reboots shorter than that (no probe need fail), one longer
    cfg = managed_config(state, sim, reconciler={"probe_interval": 0.5})
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
        took = await reboots_until_registered(sim, run.rec, [0.1, 0.2, 1.0])
        await until(lambda: run.rec.health.state == "registered")
        assert run.rec.health.registrations == 4
    finally:
        await run.stop()
    assert max(took) < 3.0  # a probe interval or two, not the periodic check (30 s here)


async def test_registration_says_what_is_known(sim: SimulatedTerminal, state: Path) -> None:
    run = Running(managed_config(state, sim))
    readable = "confirmed" if sim.firmware.read_back != "null" else "asserted"
    try:
        await until(lambda: run.rec.health.state == "registered")
        assert run.rec.health.registration == readable
        reboot = asyncio.create_task(sim.reboot(1.0))
        await until(lambda: run.rec.health.state == "down")
        assert run.rec.health.registration == "unknown"
        await reboot
        await until(lambda: run.rec.health.state == "registered")
        assert run.rec.health.registration == readable
    finally:
        await run.stop()


async def test_short_reboot_marks_the_registration_lost_once(
    sim: SimulatedTerminal, state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = Running(managed_config(state, sim, reconciler={"probe_interval": 0.5}))
    try:
        await until(lambda: run.rec.health.state == "registered")
        caplog.set_level(logging.INFO, "edged.terminals.reconciler")
        await reboots_until_registered(sim, run.rec, [0.05])
    finally:
        await run.stop()
    lost = [
        r.getMessage() for r in caplog.records if "restoring its registration" in r.getMessage()
    ]
    down = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lost) + len(down) == 1  # one line for the one reboot, however it was seen


async def test_retrust_acts_at_once(sim: SimulatedTerminal, state: Path) -> None:
    # a backoff of up to 10 minutes: only the trust itself can make the retry come sooner
    slow = {"backoff_initial": 600, "backoff_max": 600, "probe_interval": 0.2}
    cfg = managed_config(state, sim, tls_fingerprint=None, reconciler=slow)
    db = store.open_database(cfg.storage.database_path)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "untrusted")
        assert run.rec.health.registration == "untrusted"
        presented = await tlspin.fetch_certificate("127.0.0.1", sim.port)
        terminals.record_pin(db.conn, cfg.terminals[0], presented)
        took = await until(lambda: run.rec.health.state == "registered" and sim.registered)
    finally:
        await run.stop()
        db.conn.close()
    assert took < 2.0


async def test_a_probe_cycle_logs_nothing_at_info(
    sim: SimulatedTerminal,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    restore_root_logger: None,
) -> None:
    from edged import logs

    logs.setup("info", "text")  # the daemon's own logging, to (captured) stderr
    run = Running(managed_config(state, sim))
    try:
        await until(lambda: run.rec.health.state == "registered")
        capsys.readouterr()
        before = sum(sim.requests.values())
        await until(lambda: sum(sim.requests.values()) >= before + 20)  # ten probes or more
        logged = capsys.readouterr().err
        assert run.rec.health.state == "registered"
    finally:
        await run.stop()
    assert logged == ""
    logs.setup("debug", "text")
    logging.getLogger("httpx").info("HTTP Request: GET https://terminal/v2/datasync/ping")
    assert "DEBUG" in capsys.readouterr().err  # still there at debug level, as DEBUG
