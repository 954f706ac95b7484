"""The GPIO layer on gpiozero's MockFactory: factory choice, claims, debounce, the guard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from gpiozero import Device, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from edged.config import Config
from edged.doors import gpio
from edged.errors import GpioError
from edged.ops import wiring
from tests.timefix import FakeClock, turn, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def no_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No pin factory chosen yet, no environment override; whatever gets chosen is undone."""
    monkeypatch.delenv(gpio.ENV, raising=False)
    Device.pin_factory = None
    yield
    if isinstance(Device.pin_factory, MockFactory):
        Device.pin_factory.reset()
    Device.pin_factory = None


def test_environment_wins_over_configuration(
    no_factory: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(gpio.ENV, "mock")
    caplog.set_level("INFO", logger="edged.doors.gpio")
    factory = gpio.choose_factory("lgpio")
    assert isinstance(factory, MockFactory) and Device.pin_factory is factory
    assert "pin factory mock ($GPIOZERO_PIN_FACTORY = 'mock')" in caplog.text


def test_configured_factory_is_used(no_factory: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="edged.doors.gpio")
    assert gpio.is_mock(gpio.choose_factory("mock"))
    assert "(gpio.pin_factory = 'mock')" in caplog.text


def test_unknown_factory_is_a_clear_error(
    no_factory: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gpio.ENV, "bogus")
    with pytest.raises(GpioError, match="unknown pin factory 'bogus'"):
        gpio.choose_factory("mock")


def test_output_is_claimed_at_its_quiet_level(mock_factory: MockFactory) -> None:
    line = mock_factory.pin(5)
    line.drive_high()  # an active-low relay module's pull-up holds the line high
    line.clear_states()
    out = gpio.Output("relay", 5, active_high=False, quiet=False, factory=mock_factory)
    assert line.function == "output" and [s.state for s in line.states] == [True]
    assert out.set(True, "test") and line.state is False
    assert not out.set(True, "again")  # no change, no write
    out.close()
    assert [s.state for s in line.states] == [True, False, True]


def test_busy_pin_is_a_gpio_error(mock_factory: MockFactory) -> None:
    held = DigitalOutputDevice(pin=6, pin_factory=mock_factory)
    with pytest.raises(GpioError, match="cannot claim GPIO 6"):
        gpio.Output("relay", 6, active_high=True, quiet=False, factory=mock_factory)
    held.close()


def test_daemon_refuses_to_start_on_a_busy_pin(
    make_config: Callable[..., Config], mock_factory: MockFactory
) -> None:
    cfg = make_config('[gpio]\npin_factory = "mock"\n[[doors]]\nname = "a"\nlock = { pin = 7 }\n')
    held = DigitalOutputDevice(pin=7, pin_factory=mock_factory)
    with pytest.raises(GpioError) as info:
        wiring.build(cfg)
    assert info.value.exit_code == 69
    held.close()
    daemon = wiring.build(cfg)  # and everything it opened was released: it starts now
    assert daemon.doors is not None
    daemon.doors.close()
    daemon.store.close()
    for sock in daemon.receiver_sockets + daemon.admin_sockets:
        sock.close()


def test_guard_forces_quiet_unless_held(mock_factory: MockFactory, fake_clock: FakeClock) -> None:
    out = gpio.Output(
        "lock", 8, active_high=True, quiet=False, factory=mock_factory, limit=0.1, clock=fake_clock
    )
    tripped: list[gpio.Output] = []
    guard = gpio.Guard(tripped.append, clock=fake_clock)  # checked here, not by its thread
    guard.outputs = [out]
    try:
        out.hold(True)
        out.set(True, "held")
        fake_clock.advance(0.25)
        guard.check()
        assert out.on and not tripped
        out.hold(False)  # the limit counts from here
        fake_clock.advance(0.09)
        guard.check()
        assert out.on
        fake_clock.advance(0.02)
        guard.check()
        assert not out.on and tripped == [out] and mock_factory.pin(8).state is False
        assert guard.trips == 1
    finally:
        out.close()


async def test_guard_thread_checks_on_its_own(mock_factory: MockFactory) -> None:
    out = gpio.Output("lock", 8, active_high=True, quiet=False, factory=mock_factory, limit=0.05)
    tripped: list[gpio.Output] = []
    guard = gpio.Guard(tripped.append, interval=0.01)
    guard.outputs = [out]
    guard.start()
    try:
        out.set(True, "pulse")
        await until(lambda: not out.on)
        assert tripped == [out] and guard.alive
    finally:
        guard.stop()
        out.close()
    assert not guard.alive


async def test_input_settles_and_poll_catches_a_lost_edge(
    mock_factory: MockFactory, fake_clock: FakeClock
) -> None:
    seen: list[bool] = []
    line = mock_factory.pin(9)
    switch = gpio.Input("switch", 9, True, 0.02, mock_factory, seen.append, fake_clock)
    switch.attach(asyncio.get_running_loop())
    line.drive_low()  # pressed
    await turn()
    fake_clock.advance(0.01)
    line.drive_high()  # bounced back within the settle time
    line.drive_low()
    await turn()
    fake_clock.advance(0.015)  # the settle time counts from the last edge
    assert seen == []
    fake_clock.advance(0.01)
    assert seen == [True]
    switch.device.when_activated = switch.device.when_deactivated = None  # edges get lost
    line.drive_high()
    await turn()
    fake_clock.advance(1.0)
    assert seen == [True]
    switch.poll()
    fake_clock.advance(0.02)
    assert seen == [True, False]
    switch.close()
