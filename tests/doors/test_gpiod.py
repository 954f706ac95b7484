"""edged's gpiod pin factory over both libgpiod Python APIs, on a simulated chip in this process.

No kernel chip here: ``SimChip`` stands for one (what gpio-sim does in the kernel: a level per
line, driven by the consumer on an output and by the outside world on an input, the consumer's
bias setting the outside level, edges delivered through a file descriptor), spoken to through
a fake of each API's shape (v1: bookworm's python3-libgpiod 1.6; v2: trixie's 2.x). The real
check, the kernel's character device under edged, is the VM test's GPIO stage
(tests/vm/vm-test.sh).
"""

from __future__ import annotations

import asyncio
import enum
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from gpiozero import DigitalInputDevice

from edged.doors import gpio
from edged.doors.gpiod import GpiodFactory
from edged.errors import GpioError
from tests.timefix import FakeClock, turn, until

pytestmark = pytest.mark.anyio
CHIP = "/dev/gpiochip7"


class SimChip:
    """Eight lines: levels, who holds each, every level a line ever had, edges to a pipe."""

    def __init__(self, lines: int = 8) -> None:
        self.lines = lines
        self.level = [0] * lines
        self.history: list[list[int]] = [[0] for _ in range(lines)]
        self.held: dict[int, Any] = {}
        self.bias: dict[int, str | None] = {}
        self.no_bias = False  # an old kernel: requests with a bias fail
        self.lock = threading.Lock()

    def set(self, offset: int, level: int) -> None:
        with self.lock:
            if self.level[offset] == level:
                return
            self.level[offset] = level
            self.history[offset].append(level)
            holder = self.held.get(offset)
        if holder is not None and holder.edges:
            holder.post(level)

    def take(self, offset: int, holder: Any) -> None:
        if offset in self.held:
            raise OSError(16, "Device or resource busy")
        self.held[offset] = holder

    def drop(self, offset: int) -> None:
        self.held.pop(offset, None)
        self.bias.pop(offset, None)
        self.set(offset, 0)  # released: back to the chip's own pull-down


class Held:
    """A requested line's edge queue and its file descriptor."""

    def __init__(self, chip: SimChip, offset: int, edges: bool) -> None:
        self.chip, self.offset, self.edges = chip, offset, edges
        self.queue: list[int] = []
        self.rfd, self.wfd = os.pipe()

    def post(self, level: int) -> None:
        self.queue.append(level)
        os.write(self.wfd, b"e")

    def pop(self) -> list[int]:
        os.read(self.rfd, 1)
        return [self.queue.pop(0)]

    def close(self) -> None:
        self.chip.drop(self.offset)
        os.close(self.rfd)
        os.close(self.wfd)


def input_level(chip: SimChip, offset: int, bias: str | None) -> None:
    if bias is not None and chip.no_bias:
        raise OSError(22, "Invalid argument")
    chip.bias[offset] = bias
    if bias in ("up", "down"):
        chip.set(offset, int(bias == "up"))


def fake_v1(chip: SimChip) -> types.ModuleType:
    """The v1 API's shape: Chip(path).get_line(n).request(type=..., flags=..., default_val=...)."""
    mod = types.ModuleType("fake_gpiod_v1")
    mod.LINE_REQ_DIR_OUT = 3  # type: ignore[attr-defined]
    mod.LINE_REQ_EV_BOTH_EDGES = 6  # type: ignore[attr-defined]
    bias_of = {0: None, 0x20: "up", 0x40: "down", 0x10: "floating"}
    mod.LINE_REQ_FLAG_BIAS_DISABLE = 0x10  # type: ignore[attr-defined]
    mod.LINE_REQ_FLAG_BIAS_PULL_UP = 0x20  # type: ignore[attr-defined]
    mod.LINE_REQ_FLAG_BIAS_PULL_DOWN = 0x40  # type: ignore[attr-defined]

    class LineEvent:
        RISING_EDGE, FALLING_EDGE = 1, 2

        def __init__(self, level: int) -> None:
            self.type = self.RISING_EDGE if level else self.FALLING_EDGE

    class Line:
        def __init__(self, offset: int) -> None:
            self.offset = offset
            self.held: Held | None = None

        def request(
            self, consumer: str, type: int, flags: int = 0, default_val: int | None = None
        ) -> None:
            assert consumer == "edged"
            held = Held(chip, self.offset, type == mod.LINE_REQ_EV_BOTH_EDGES)
            chip.take(self.offset, held)
            try:
                if type == mod.LINE_REQ_DIR_OUT:
                    chip.set(self.offset, int(default_val or 0))
                else:
                    input_level(chip, self.offset, bias_of[flags])
            except OSError:
                held.close()
                raise
            self.held = held

        def set_value(self, value: int) -> None:
            chip.set(self.offset, value)

        def get_value(self) -> int:
            return chip.level[self.offset]

        def event_get_fd(self) -> int:
            assert self.held is not None
            return self.held.rfd

        def event_read(self) -> LineEvent:
            assert self.held is not None
            return LineEvent(self.held.pop()[0])

        def release(self) -> None:
            if self.held is not None:
                self.held.close()
                self.held = None

    class Chip:
        def __init__(self, path: str) -> None:
            if path != CHIP:
                raise FileNotFoundError(2, "No such file or directory")
            self.closed = False

        def num_lines(self) -> int:
            return chip.lines

        def get_line(self, offset: int) -> Line:
            return Line(offset)

        def close(self) -> None:
            self.closed = True

    mod.Chip = Chip  # type: ignore[attr-defined]
    mod.LineEvent = LineEvent  # type: ignore[attr-defined]
    return mod


def fake_v2(chip: SimChip) -> tuple[types.ModuleType, types.ModuleType]:
    """The v2 API's shape: request_lines(path, consumer=, config={n: LineSettings(...)})."""
    mod = types.ModuleType("fake_gpiod_v2")
    line = types.ModuleType("fake_gpiod_v2.line")
    line.Direction = enum.Enum("Direction", "AS_IS INPUT OUTPUT")  # type: ignore[attr-defined]
    line.Value = enum.Enum("Value", {"INACTIVE": 0, "ACTIVE": 1})  # type: ignore[attr-defined]
    line.Bias = enum.Enum("Bias", "AS_IS UNKNOWN DISABLED PULL_UP PULL_DOWN")  # type: ignore[attr-defined]
    line.Edge = enum.Enum("Edge", "NONE RISING FALLING BOTH")  # type: ignore[attr-defined]
    biases = {"PULL_UP": "up", "PULL_DOWN": "down", "DISABLED": "floating"}

    class EdgeEvent:
        Type = enum.Enum("Type", "RISING_EDGE FALLING_EDGE")

        def __init__(self, level: int) -> None:
            self.event_type = self.Type.RISING_EDGE if level else self.Type.FALLING_EDGE

    class LineSettings:
        def __init__(self, **settings: Any) -> None:
            self.settings = settings

    class Request:
        def __init__(self, offset: int, settings: dict[str, Any]) -> None:
            both = settings.get("edge_detection") == line.Edge.BOTH  # type: ignore[attr-defined]
            self.offset = offset
            self.held: Held | None = Held(chip, offset, both)
            chip.take(offset, self.held)
            try:
                if settings["direction"] == line.Direction.OUTPUT:  # type: ignore[attr-defined]
                    chip.set(offset, settings["output_value"].value)
                else:
                    bias = settings.get("bias")
                    input_level(chip, offset, None if bias is None else biases[bias.name])
            except OSError:
                self.held.close()
                raise
            self.fd = self.held.rfd

        def set_value(self, offset: int, value: Any) -> None:
            chip.set(offset, value.value)

        def get_value(self, offset: int) -> Any:
            return line.Value(chip.level[offset])  # type: ignore[attr-defined]

        def read_edge_events(self) -> list[EdgeEvent]:
            assert self.held is not None
            return [EdgeEvent(level) for level in self.held.pop()]

        def release(self) -> None:
            if self.held is not None:
                self.held.close()
                self.held = None

    def request_lines(path: str, consumer: str, config: dict[int, LineSettings]) -> Request:
        if path != CHIP:
            raise FileNotFoundError(2, "No such file or directory")
        assert consumer == "edged" and len(config) == 1
        [(offset, settings)] = config.items()
        return Request(offset, settings.settings)

    class Chip:
        def __init__(self, path: str) -> None:
            if path != CHIP:
                raise FileNotFoundError(2, "No such file or directory")

        def __enter__(self) -> Chip:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def get_info(self) -> Any:
            return types.SimpleNamespace(num_lines=chip.lines)

    mod.request_lines = request_lines  # type: ignore[attr-defined]
    mod.LineSettings = LineSettings  # type: ignore[attr-defined]
    mod.EdgeEvent = EdgeEvent  # type: ignore[attr-defined]
    mod.Chip = Chip  # type: ignore[attr-defined]
    mod.line = line  # type: ignore[attr-defined]
    return mod, line


@pytest.fixture
def sim() -> SimChip:
    return SimChip()


@pytest.fixture(params=[1, 2], ids=["libgpiod-v1", "libgpiod-v2"])
def factory(
    request: pytest.FixtureRequest, sim: SimChip, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GpiodFactory]:
    """The factory on ``sim`` through the v1 or the v2 API; closed, with no thread left, after."""
    if request.param == 1:
        module = fake_v1(sim)
    else:
        module, line = fake_v2(sim)
        monkeypatch.setitem(sys.modules, line.__name__, line)
    made = GpiodFactory(CHIP, gpiod=module)
    assert made.version == request.param
    yield made
    made.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("edged-gpiod-")]
    assert sim.held == {}


@pytest.mark.parametrize("active_high", [True, False])
def test_an_output_is_requested_at_its_quiet_level_and_released_there(
    factory: GpiodFactory, sim: SimChip, active_high: bool
) -> None:
    quiet = 0 if active_high else 1  # electrical level of "locked" on a fail-secure lock
    lock = gpio.Output("lock", 3, active_high, False, factory)
    assert sim.history[3] == [0, quiet][: 1 + quiet]  # the request carried it: no other level
    assert 3 in sim.held and lock.level == ("low" if active_high else "high")
    lock.set(True, "grant")
    assert sim.level[3] == 1 - quiet
    lock.set(False, "re-lock")
    assert sim.level[3] == quiet
    lock.close()
    assert 3 not in sim.held and sim.history[3][-1] == 0  # the chip's own pull after release


def test_a_line_is_claimed_once(factory: GpiodFactory) -> None:
    first = gpio.Output("lock", 4, True, False, factory)
    with pytest.raises(GpioError, match="lock 2: cannot claim GPIO 4"):
        gpio.Output("lock 2", 4, True, False, factory)
    assert first.device.value == 0 and not first.device.closed


def test_a_line_the_chip_lacks_is_a_clear_error(factory: GpiodFactory) -> None:
    with pytest.raises(GpioError, match=r"/dev/gpiochip7 has no line 9 \(0-7\)"):
        gpio.Output("lock", 9, True, False, factory)


@pytest.mark.parametrize("pull_up", [True, False])
def test_an_input_gets_its_bias_and_its_edges(
    factory: GpiodFactory, sim: SimChip, pull_up: bool
) -> None:
    seen: list[str] = []
    changed = threading.Event()
    button = DigitalInputDevice(pin=2, pull_up=pull_up, pin_factory=factory)
    assert sim.bias[2] == ("up" if pull_up else "down") and sim.level[2] == int(pull_up)
    assert not button.is_active

    def edge(what: str) -> Callable[[], None]:
        return lambda: (seen.append(what), changed.set())

    button.when_activated, button.when_deactivated = edge("pressed"), edge("released")
    sim.set(2, int(not pull_up))  # the switch pulls the line away from its pull
    assert changed.wait(2) and seen == ["pressed"] and button.is_active
    changed.clear()
    sim.set(2, int(pull_up))
    assert changed.wait(2) and seen == ["pressed", "released"]
    button.close()
    assert 2 not in sim.held


async def test_an_edge_reaches_the_debounced_input(
    factory: GpiodFactory, sim: SimChip, fake_clock: FakeClock
) -> None:
    seen: list[bool] = []
    contact = gpio.Input("contact", 1, True, 0.05, factory, seen.append, fake_clock)
    contact.attach(asyncio.get_running_loop())
    sim.set(1, 0)  # the contact closes against the pull-up: active
    await until(lambda: fake_clock.pending > 0, timeout=2)  # the watcher thread's edge arrived
    fake_clock.advance(0.05)
    assert seen == [True]
    sim.set(1, 1)
    await until(lambda: fake_clock.pending > 0, timeout=2)
    fake_clock.advance(0.05)
    await turn()
    assert seen == [True, False]
    contact.close()


def test_a_kernel_without_bias_gets_the_request_without_it(
    factory: GpiodFactory, sim: SimChip, caplog: pytest.LogCaptureFixture
) -> None:
    sim.no_bias = True
    DigitalInputDevice(pin=5, pull_up=True, pin_factory=factory)
    assert 5 in sim.held and sim.bias[5] is None
    assert "no bias up" in caplog.text and "requested without it" in caplog.text


def test_closing_the_factory_releases_every_line(factory: GpiodFactory, sim: SimChip) -> None:
    lock = gpio.Output("lock", 0, True, False, factory)
    lock.set(True, "grant")
    button = DigitalInputDevice(pin=1, pull_up=True, pin_factory=factory)
    assert set(sim.held) == {0, 1}
    started = time.monotonic()
    factory.close()
    assert sim.held == {} and sim.level[0] == 0
    assert time.monotonic() - started < 1  # the watcher woke at once, no polling interval
    assert lock.on and not button.closed  # the factory went first: the devices only know it now


def test_a_missing_chip_is_a_clear_error(sim: SimChip) -> None:
    with pytest.raises(GpioError, match=r"gpiod: cannot open GPIO chip /dev/gpiochip3: .*No such"):
        GpiodFactory("/dev/gpiochip3", gpiod=fake_v1(sim))


def test_without_python3_libgpiod_the_factory_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)  # import gpiod raises ImportError
    monkeypatch.delenv(gpio.ENV, raising=False)
    monkeypatch.setattr(gpio.Device, "pin_factory", None)
    with pytest.raises(GpioError, match="gpiod: python3-libgpiod is not installed"):
        gpio.choose_factory("gpiod", CHIP)
