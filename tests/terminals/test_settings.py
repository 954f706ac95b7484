"""Terminal settings as desired state: read-modify-write, drift re-asserted, over the simulator."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edged import config
from edged.config.schema import TerminalConfig, TerminalSettings
from edged.sim.terminal import SimulatedTerminal
from edged.terminals import settings as desired
from tests.simfix import Running, managed_config
from tests.timefix import until

pytestmark = pytest.mark.anyio
LOG = "edged.terminals.settings"
SITE = """[terminal_settings]
keep_door_open_duration = 10
gpio_b = "door_contact"
gpio_c = "exit_button"
tamper_alarm = false
forced_open_alarm = true
door_sensor_timeout = 20
auto_reboot = true
reboot_time = "03:30"
verify_threshold = 0.85
liveness_threshold = 0.98
"""


def ours(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG and r.levelno == level]


async def test_chosen_keys_are_written_and_the_rest_is_kept(
    sim: SimulatedTerminal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = sim.firmware.version == "1.0"
    sim.config.access["gpio_a"] = 3  # the site's own choices, not edged's: kept
    sim.config.access["network_relay_address"] = "10.0.0.9"
    sim.config.system["sound_volume"] = 20
    sim.config.recognize["mask_detect"] = True
    cfg = managed_config(tmp_path / "state", sim, extra=SITE)
    caplog.set_level(logging.INFO, LOG)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
        access, system, recognize = sim.config.access, sim.config.system, sim.config.recognize
        assert access["keep_door_open_duration"] == 10 and access["door_sensor_timeout"] == 20
        assert (access["gpio_b"], access["gpio_c"]) == (2, 3)
        assert access["tamper"] is False and access["force_open"] is True
        assert access["gpio_a"] == 3 and access["network_relay_address"] == "10.0.0.9"
        assert ("wigan_input" in access) is old and ("wiegand_settings" in access) is not old
        assert system["reboot_time"] == "03:30:00" and system["sound_volume"] == 20
        assert abs(recognize["verify_threshold"] - 0.85) < 1e-6 and recognize["mask_detect"]
        assert recognize["verify_threshold"] != 0.85  # single precision on the terminal
        health = run.rec.report()["settings"]
        assert health["state"] == "in-step" and health["writes"] == 3
        assert health["drift"]["keep_door_open_duration"] == {"terminal": 6, "wanted": 10}
        posts = dict(sim.config.posts)
        run.rec.trigger("test")  # in step: nothing is written again (thresholds included)
        await until(lambda: sim.requests["GET /v1/device/access"] >= 3)
        await until(lambda: run.rec.health.state == "registered")
        assert sim.config.posts == posts
    finally:
        await run.stop()
    said = ours(caplog, logging.INFO)
    assert len(said) == 3
    assert "keep_door_open_duration 6 -> 10" in said[0] and "tamper_alarm True -> False" in said[0]


async def test_drift_is_re_asserted_on_demand_and_after_a_factory_reset(
    sim: SimulatedTerminal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = managed_config(tmp_path / "state", sim, extra=SITE)
    run = Running(cfg)
    try:
        await until(lambda: run.rec.health.state == "registered")
        caplog.set_level(logging.INFO, LOG)
        sim.config.access["keep_door_open_duration"] = 4  # someone at the terminal's menu
        run.rec.trigger("on demand")
        fixed = {"keep_door_open_duration": {"terminal": 4, "wanted": 10}}
        await until(lambda: run.rec.report()["settings"]["drift"] == fixed)
        assert sim.config.access["keep_door_open_duration"] == 10
        sim.config.factory_reset()
        await sim.reboot(0.3)
        await until(lambda: sim.config.access["keep_door_open_duration"] == 10, timeout=10)
        await until(lambda: sim.config.system["reboot_time"] == "03:30:00")
        await until(lambda: run.rec.report()["settings"]["writes"] == 3 + 1 + 3)
        assert abs(sim.config.recognize["verify_threshold"] - 0.85) < 1e-6
    finally:
        await run.stop()
    said = ours(caplog, logging.INFO)
    assert said[0] == "terminal lobby: settings set: keep_door_open_duration 4 -> 10"
    assert len(said) == 4  # the drift, then the three objects after the reset


async def test_firmware_without_a_key_shows_it_unsupported(
    sim: SimulatedTerminal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = "[terminal_settings]\nresign_interval = 30\n"
    caplog.set_level(logging.INFO, LOG)
    run = Running(managed_config(tmp_path / "state", sim, extra=extra))
    try:
        await until(lambda: run.rec.health.state == "registered")
        health = run.rec.report()["settings"]
        if sim.firmware.version == "1.0":
            assert health["unsupported"] == ["resign_interval"] and health["writes"] == 0
            assert "resign_interval" not in sim.config.access
            run.rec.trigger("test")
            await until(lambda: sim.requests["GET /v1/device/access"] >= 2)
            warned = ours(caplog, logging.WARNING)
            assert warned == [
                "terminal lobby: setting resign_interval not applied: its firmware has no "
                "resign_interval in /v1/device/access"
            ]
        else:
            assert health["unsupported"] == [] and sim.config.access["resign_interval"] == 30
    finally:
        await run.stop()


async def test_a_refusal_is_recorded_once_and_the_terminal_stays_registered(
    sim: SimulatedTerminal, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.config.post_system = lambda body: (None, 500, "flash busy")  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, LOG)
    run = Running(managed_config(tmp_path / "state", sim, extra=SITE))
    try:
        await until(lambda: run.rec.health.state == "registered")
        health = run.rec.report()["settings"]
        assert health["state"] == "refused" and "flash busy" in health["error"]
        run.rec.trigger("test")
        await until(lambda: sim.requests["POST /v1/device/system"] >= 2)
        await until(lambda: run.rec.health.state == "registered")
        del sim.config.post_system  # the terminal takes it again
        run.rec.trigger("test")
        await until(lambda: run.rec.report()["settings"]["state"] == "in-step")
    finally:
        await run.stop()
    assert len(ours(caplog, logging.WARNING)) == 1
    assert "terminal lobby: settings applied again" in ours(caplog, logging.INFO)


async def test_per_terminal_settings_win_key_by_key(sim: SimulatedTerminal, tmp_path: Path) -> None:
    run = Running(
        managed_config(
            tmp_path / "state",
            sim,
            extra=SITE,
            settings={"keep_door_open_duration": 25, "liveness": False},
        )
    )
    try:
        await until(lambda: run.rec.health.state == "registered")
        assert sim.config.access["keep_door_open_duration"] == 25
        assert sim.config.access["tamper"] is False  # the site's
        assert sim.config.recognize["liveness"] is False
    finally:
        await run.stop()


async def test_remote_auth_fallback_from_the_settings(
    sim: SimulatedTerminal, tmp_path: Path
) -> None:
    extra = "[terminal_settings]\nremote_auth_fallback_minutes = 7\n"
    run = Running(managed_config(tmp_path / "state", sim, extra=extra, remote_auth=True))
    try:
        await until(lambda: run.rec.health.state == "registered")
        assert sim.state.functions["remote_auth_timeout_to_local_auth"] == 7
        assert run.rec.report()["settings"]["state"] == "none"  # functions: the registration's
    finally:
        await run.stop()


def test_fallback_precedence_and_float_comparison() -> None:
    site = config.Config(terminal_settings=TerminalSettings(remote_auth_fallback_minutes=5))
    assert desired.fallback_minutes(site, TerminalConfig(name="a", serial="S")) == 5
    own = TerminalConfig(name="a", serial="S", remote_auth_fallback_minutes=9)
    assert desired.fallback_minutes(site, own) == 9
    chosen = TerminalConfig(
        name="a", serial="S", settings=TerminalSettings(remote_auth_fallback_minutes=0)
    )
    assert desired.fallback_minutes(site, chosen) == 0
    assert desired.same(0.8999999761581421, 0.9) and not desired.same(0.8999, 0.9)
    assert desired.same(True, True) and not desired.same(1, True)
