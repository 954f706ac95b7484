"""Doors opened through a terminal's own relay (doors[].terminal_relay)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from edged import config
from edged.config import Config, DoorConfig, GpioConfig, LockConfig
from edged.doors import control as doors
from edged.doors import state
from edged.errors import ConfigError
from edged.receive.receiver import Receiver, create_app
from edged.sim.terminal import SimulatedTerminal
from edged.store import events as store
from tests.conftest import LiveDaemon, asgi_client, auth_request, grant_person
from tests.simfix import free_port, managed_config
from tests.timefix import FakeClock, until

pytestmark = pytest.mark.anyio

RELAY_TERMINAL = """
[gateway]
public_url = "http://127.0.0.1:8090"

[[terminals]]
name = "front-terminal"
serial = "PS71HD01MC22C00077"
host = "127.0.0.1"
port = 8443
password = "x"
door = "front"

[gpio]
pin_factory = "mock"

[[doors]]
name = "front"
lock = { pin = 17 }
unlock_time = 0.2
terminal_relay = "front-terminal"

[[doors]]
name = "side"
terminal_relay = "front-terminal"
"""


@pytest.mark.parametrize(
    ("on", "held", "was_held", "mode"),
    [
        (True, False, False, state.RELAY_PULSE),
        (True, True, False, state.RELAY_STAY_OPEN),
        (False, False, True, state.RELAY_PULSE),
        (False, False, False, None),
    ],
)
def test_relay_modes(on: bool, held: bool, was_held: bool, mode: int | None) -> None:
    assert state.relay_mode(on, held, was_held) == mode
    assert mode != 2  # never "stay closed"


def test_relay_config_is_checked(make_config: Callable[..., Config]) -> None:
    cfg = make_config(RELAY_TERMINAL)
    assert [d.terminal_relay for d in cfg.doors] == ["front-terminal", "front-terminal"]
    assert cfg.doors[1].lock.pin is None
    with pytest.raises(ConfigError) as info:
        make_config(
            RELAY_TERMINAL.replace(
                'terminal_relay = "front-terminal"\n\n[[doors]]',
                'terminal_relay = "lobby"\n\n[[doors]]',
            )
        )
    assert any("'lobby' is not a managed terminal" in p for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        make_config(
            RELAY_TERMINAL.replace(
                'name = "side"\nterminal_relay = "front-terminal"', 'name = "side"'
            )
        )
    assert any(
        "doors[1].lock.pin: is required (or a terminal_relay)" in p for p in info.value.problems
    )


@pytest.fixture
async def relay_rig(
    make_config: Callable[..., Config], mock_factory: MockFactory, fake_clock: FakeClock
) -> AsyncIterator[tuple[doors.Doors, Receiver, list[tuple[str, int]]]]:
    cfg = make_config(RELAY_TERMINAL)
    st = store.Store(cfg.storage.database_path)
    site = doors.build(cfg, st, clock=fake_clock)
    assert site is not None
    site.attach(asyncio.get_running_loop())
    sent: list[tuple[str, int]] = []

    async def relay(terminal: str, mode: int) -> None:
        if terminal == "broken":
            raise OSError("no route")
        sent.append((terminal, mode))

    site.relay = relay
    rec = Receiver(cfg, st)
    rec.listeners.append(site.on_record)
    grant_person(st.path, "e-1", door="front")
    yield site, rec, sent
    site.close()
    st.close()


async def test_grant_drives_pin_and_relay(
    relay_rig: tuple[doors.Doors, Receiver, list[tuple[str, int]]], fake_clock: FakeClock
) -> None:
    site, rec, sent = relay_rig
    assert mock_pin(17).state is False
    async with asgi_client(create_app(rec)) as client:
        answer = await client.post("/auth", json=auth_request(serial="PS71HD01MC22C00077"))
    assert answer.json()["data"]["pass"] is True
    assert mock_pin(17).state is True
    await until(lambda: sent == [("front-terminal", state.RELAY_PULSE)])
    fake_clock.advance(site.door("front").cfg.unlock_time)
    assert mock_pin(17).state is False
    await until(lambda: not site._relay_tasks)  # any command the lock sent has run
    assert sent == [("front-terminal", state.RELAY_PULSE)]  # the terminal re-locks itself


async def test_relay_only_door_holds_and_releases(
    relay_rig: tuple[doors.Doors, Receiver, list[tuple[str, int]]],
) -> None:
    site, _, sent = relay_rig
    site.hold("side", "free-access")
    await until(lambda: sent == [("front-terminal", state.RELAY_STAY_OPEN)])
    assert site.door("side").status()["locked"] is False
    site.release("side", "free-access")
    await until(lambda: len(sent) == 2)
    assert sent[1] == ("front-terminal", state.RELAY_PULSE)
    assert site.door("side").status()["locked"] is True


async def test_failing_relay_is_audited_not_fatal(
    relay_rig: tuple[doors.Doors, Receiver, list[tuple[str, int]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    site, _, _ = relay_rig
    door = site.door("side")
    door.cfg = dataclasses.replace(door.cfg, terminal_relay="broken")
    site.command("side", "open", "test")
    await until(lambda: "relay failed" in caplog.text)
    assert site.door("side").status()["locked"] is False  # the state stands; the log says why


def mock_pin(number: int) -> object:
    from gpiozero import Device

    assert Device.pin_factory is not None
    return Device.pin_factory.pin(number)


async def test_daemon_opens_through_the_simulated_terminal(
    sim: SimulatedTerminal,
    tmp_path: Path,
    mock_factory: MockFactory,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    cfg = managed_config(tmp_path / "state", sim, gateway_port=free_port(), admin_port=free_port())
    relay_door = DoorConfig(name="lobby", lock=LockConfig(pin=None), terminal_relay="lobby")
    cfg = dataclasses.replace(cfg, gpio=GpioConfig(pin_factory="mock"), doors=[relay_door])
    live = await asyncio.to_thread(start_live, cfg)
    grant_person(cfg.storage.database_path, "e-1", door="lobby")
    await until(lambda: sim.registered)
    async with httpx.AsyncClient(base_url=live.url) as client:
        answer = await client.post("/auth", json=auth_request(serial=sim.settings.serial))
    assert answer.json()["data"]["pass"] is True
    await until(lambda: sim.door_log == [state.RELAY_PULSE])
