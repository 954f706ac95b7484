"""The simulator's clock and settings endpoints, over HTTPS, as the guide describes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edged.config import TerminalConfig
from edged.errors import TerminalError
from edged.sim.terminal import SimulatedTerminal
from edged.terminals.client import TerminalClient
from tests.simfix import make_sim
from tests.timefix import FakeClock

pytestmark = pytest.mark.anyio


def client_of(sim: SimulatedTerminal) -> TerminalClient:
    terminal = TerminalConfig(
        name="lobby", serial=sim.settings.serial, host="127.0.0.1", port=sim.port
    )
    return TerminalClient(terminal, sim.settings.password, sim.fingerprint)


@pytest.fixture
async def api(sim: SimulatedTerminal) -> AsyncIterator[TerminalClient]:
    async with client_of(sim) as client:
        yield client


async def test_post_needs_the_whole_object_and_resets_what_it_omits(
    sim: SimulatedTerminal, api: TerminalClient
) -> None:
    access = await api.call("GET", "/v1/device/access")
    with pytest.raises(
        TerminalError, match="code 400: missing required fields: open_door_type, tamper"
    ):
        await api.call("POST", "/v1/device/access", {"keep_door_open_duration": 9})
    await api.call("POST", "/v1/device/access", {**access, "gpio_a": 2})
    partial = {k: v for k, v in access.items() if k != "gpio_a"}
    await api.call("POST", "/v1/device/access", {**partial, "keep_door_open_duration": 9})
    after = await api.call("GET", "/v1/device/access")
    assert after["keep_door_open_duration"] == 9 and after["gpio_a"] == 1  # back to the factory's
    system = await api.call("GET", "/v1/device/system")
    await api.call("POST", "/v1/device/system", {"auto_reboot": False})
    after = await api.call("GET", "/v1/device/system")
    assert after["auto_reboot"] is False and after["sound_volume"] == system["sound_volume"] == 80
    with pytest.raises(TerminalError, match="missing required fields: use_mode"):
        await api.call("POST", "/v1/device/recognize", {"verify_threshold": 0.8})


@pytest.mark.parametrize(
    ("path", "key", "value"),
    [
        ("/v1/device/access", "keep_door_open_duration", 31),
        ("/v1/device/access", "keep_door_open_duration", 0),
        ("/v1/device/access", "gpio_b", 5),
        ("/v1/device/access", "resign_interval", 1801),
        ("/v1/device/system", "reboot_time", "25:00:00"),
        ("/v1/device/recognize", "verify_threshold", 1.0),
        ("/v1/device/recognize", "liveness_threshold", 0),
        ("/v1/device/time", "time_zone", 13),
        ("/v1/device/time", "time_zone", -12),
    ],
)
async def test_out_of_range_is_refused_and_nothing_changes(
    tmp_path: Path, path: str, key: str, value: object
) -> None:
    sim = make_sim(tmp_path)
    await sim.start()
    try:
        async with client_of(sim) as api:
            before = await api.call("GET", path)
            body = {k: v for k, v in before.items() if k != "local_time"}
            with pytest.raises(TerminalError, match="code 400"):
                await api.call("POST", path, {**body, key: value})
            after = await api.call("GET", path)
            after.pop("local_time", None), before.pop("local_time", None)
            assert after == before
    finally:
        await sim.stop()


async def test_firmware_1_0_objects_lack_the_newer_fields(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, firmware="1.0")
    await sim.start()
    try:
        async with client_of(sim) as api:
            access = await api.call("GET", "/v1/device/access")
            assert "resign_interval" not in access and "wiegand_settings" not in access
            assert "wigan_input" in access
            with pytest.raises(TerminalError, match="unknown parameter: resign_interval"):
                await api.call("POST", "/v1/device/access", {**access, "resign_interval": 5})
            with pytest.raises(TerminalError, match="must start with http"):
                await api.call("POST", "/v1/device/time", {"server_address": "pool.ntp.org"})
            await api.call(
                "POST", "/v1/device/time", {"manual_mode": True, "local_time": "1800000000000"}
            )
            assert abs(sim.config.now() - 1_800_000_000) < 5  # 1.0 documents a string
    finally:
        await sim.stop()


async def test_thresholds_read_back_in_single_precision(
    sim: SimulatedTerminal, api: TerminalClient
) -> None:
    recognize = await api.call("GET", "/v1/device/recognize")
    await api.call("POST", "/v1/device/recognize", {**recognize, "verify_threshold": 0.9})
    after = await api.call("GET", "/v1/device/recognize")
    assert after["verify_threshold"] == pytest.approx(0.8999999761581421, abs=1e-12)


async def test_local_time_only_with_manual_mode_and_ntp_puts_it_right(tmp_path: Path) -> None:
    clock = FakeClock(wall=1_900_000_000.0)
    sim = make_sim(tmp_path, clock=clock, skew=-30.0)
    await sim.start()
    try:
        async with client_of(sim) as api:
            shown = await api.call("GET", "/v1/device/time")
            assert shown["local_time"] == (1_900_000_000 - 30) * 1000
            assert shown["time_zone"] == 8 and shown["manual_mode"] is False  # the factory's
            sim.config.ntp_reachable = False
            await api.call("POST", "/v1/device/time", {"local_time": 1_900_000_100_000})
            assert sim.config.skew == -30.0  # ignored: manual_mode is false
            await api.call(
                "POST",
                "/v1/device/time",
                {"local_time": 1_900_000_100_000, "manual_mode": True, "time_zone": -3},
            )
            assert sim.config.skew == 100.0 and sim.config.time_zone == -3
            clock.advance(10)
            assert (await api.call("GET", "/v1/device/time"))["local_time"] == 1_900_000_110_000
            sim.config.ntp_reachable = True
            await api.call(
                "POST", "/v1/device/time", {"manual_mode": False, "server_address": "10.0.0.1"}
            )
            assert sim.config.skew == 0.0 and sim.config.server_address == "10.0.0.1"
            # records and identity headers carry the terminal's own clock
            sim.config.skew = 50.0
            assert sim.emit()[0]["timestamp"] == int(clock.time()) + 50
    finally:
        await sim.stop()


async def test_settings_and_clock_survive_a_reboot(tmp_path: Path) -> None:
    sim = make_sim(tmp_path)
    await sim.start()
    try:
        sim.config.access["keep_door_open_duration"] = 12
        sim.config.skew = 7.0
        await sim.reboot(0.1)
        assert sim.config.access["keep_door_open_duration"] == 12 and sim.config.skew == 7.0
        sim.config.factory_reset()
        assert sim.config.access["keep_door_open_duration"] == 6 and sim.config.skew == 7.0
    finally:
        await sim.stop()
