"""GPIO through gpiozero: the pin factory, outputs claimed at their quiet level, inputs, the guard.

edged never talks to a GPIO backend directly. Outputs are created with an explicit
``initial_value`` at their quiet (locked / silent) level, which gpiozero hands to the backend's
``output_with_state`` (lgpio claims the line at that level, RPi.GPIO sets it up with ``initial``,
edged's own gpiod factory requests the line with it),
so claiming a pin never passes through the other level. Inputs are debounced in edged itself: an
edge only (re)arms a settle timer on the event loop, and the level read when the timer fires is
what counts; this behaves the same on every backend and on ``MockFactory`` (whose ``bounce_time``
is accepted but not implemented). The max-on guard is a thread of its own, so a stalled event loop
cannot keep a lock open past its limit. Time (the settle timers, the outputs' on-times the guard
compares with their limits) comes from the ``Clock`` passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import Device, DigitalInputDevice, DigitalOutputDevice

from edged.clock import SYSTEM, Clock, Timer
from edged.errors import GpioError

log = logging.getLogger(__name__)

FACTORIES: dict[str, str] = {
    "lgpio": "gpiozero.pins.lgpio:LGPIOFactory",
    "rpigpio": "gpiozero.pins.rpigpio:RPiGPIOFactory",
    "pigpio": "gpiozero.pins.pigpio:PiGPIOFactory",
    "native": "gpiozero.pins.native:NativeFactory",
    "mock": "gpiozero.pins.mock:MockFactory",
    "gpiod": "edged.doors.gpiod:GpiodFactory",  # edged's own, over libgpiod (gpio.chip)
}
ENV = "GPIOZERO_PIN_FACTORY"


def factory_name(factory: Any) -> str:
    """A short name for a pin factory object (``mock``, ``lgpio``...)."""
    cls = type(factory).__name__
    for name, path in FACTORIES.items():
        if path.endswith(f":{cls}"):
            return name
    return cls


def choose_factory(configured: str, chip: str = "/dev/gpiochip0") -> Any:
    """The pin factory to use: ``$GPIOZERO_PIN_FACTORY`` wins, then ``gpio.pin_factory``.

    ``chip`` is the GPIO chip of the ``gpiod`` factory (``gpio.chip``)."""
    env = os.environ.get(ENV, "").strip()
    wanted = env or configured
    current = Device.pin_factory
    if current is not None and wanted in ("auto", factory_name(current)):
        factory = current  # already chosen in this process (the tests' MockFactory)
    else:
        factory = _create(wanted, chip)
        Device.pin_factory = factory
    origin = f"${ENV}" if env else "gpio.pin_factory"
    log.info("gpio: pin factory %s (%s = %r)", factory_name(factory), origin, wanted)
    if factory_name(factory) == "native":
        log.warning("gpio: the native factory cannot claim outputs glitch-free: prefer lgpio")
    return factory


def _create(name: str, chip: str) -> Any:
    try:
        if name == "auto":
            return Device._default_pin_factory()
        if name not in FACTORIES:
            raise GpioError(f"gpio: unknown pin factory {name!r} ({', '.join(FACTORIES)})")
        module, _, cls = FACTORIES[name].partition(":")
        factory = getattr(importlib.import_module(module), cls)
        return factory(chip) if name == "gpiod" else factory()
    except GpioError:
        raise
    except Exception as exc:
        raise GpioError(f"gpio: cannot use pin factory {name!r}: {exc}") from None


def is_mock(factory: Any) -> bool:
    """Whether pins are simulated (every output change is then logged at INFO)."""
    return factory_name(factory) == "mock"


class Output:
    """One output: quiet (locked, silent) or on (unlocked, sounding), with guard bookkeeping."""

    def __init__(
        self,
        label: str,
        pin: int,
        active_high: bool,
        quiet: bool,
        factory: Any,
        limit: float | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.label = label
        self.clock = clock
        self.pin = pin
        self.quiet = quiet  # the gpiozero value (active or not) of the quiet state
        self.active_high = active_high
        self.limit = limit
        self.held = False  # a hold allows staying on past the limit
        self.on_since: float | None = None  # monotonic time of leaving quiet
        self.changed_at = time.perf_counter()
        self.changes = 0
        self.verbose = is_mock(factory)
        self._lock = threading.Lock()
        self._on = False
        try:
            self.device = DigitalOutputDevice(
                pin=pin, active_high=active_high, initial_value=quiet, pin_factory=factory
            )
        except Exception as exc:
            raise GpioError(f"{label}: cannot claim GPIO {pin}: {exc}") from None
        self._say(f"claimed at {self._level(quiet)} (quiet)")

    @property
    def on(self) -> bool:
        """Away from the quiet level (a lock: unlocked)."""
        return self._on

    def set(self, on: bool, why: str) -> bool:
        """Drive the output; returns whether it changed."""
        with self._lock:
            if on == self._on or self.device.closed:
                return False
            self._write(on)
        self._say(f"-> {self._level(self.quiet != on)} ({'on' if on else 'quiet'}): {why}")
        return True

    def _write(self, on: bool) -> None:
        self.device.value = self.quiet != on
        self._on = on
        self.on_since = self.clock.monotonic() if on else None
        self.changed_at = time.perf_counter()
        self.changes += 1

    def hold(self, held: bool) -> None:
        """Allow (or stop allowing) the output to stay on past its limit."""
        with self._lock:
            if self.held and not held and self._on:
                self.on_since = self.clock.monotonic()  # the limit counts from the end of the hold
            self.held = held

    def trip(self, now: float) -> bool:
        """The guard's check: force quiet when on, unheld and past the limit."""
        with self._lock:
            if not self._on or self.held or self.limit is None or self.on_since is None:
                return False
            if now - self.on_since <= self.limit or self.device.closed:
                return False
            self._write(False)
        log.error("%s: on past its %.1f s limit, no hold: forced quiet", self.label, self.limit)
        return True

    def close(self) -> None:
        """Return to the quiet level, then release the pin."""
        with self._lock:
            if self.device.closed:
                return
            if self._on:
                self._write(False)
            self.device.close()
        self._say("released at quiet level")

    @property
    def level(self) -> str:
        """The electrical level now: ``high`` or ``low``."""
        return self._level(self.quiet != self._on)

    def _level(self, value: bool) -> str:
        return "high" if value == self.active_high else "low"

    def _say(self, text: str) -> None:
        level = logging.INFO if self.verbose else logging.DEBUG
        log.log(level, "%s (GPIO%d) %s", self.label, self.pin, text)


class Input:
    """A switch input debounced on the event loop: ``on_change(active)`` once a level settles."""

    def __init__(
        self,
        label: str,
        pin: int,
        pull_up: bool,
        bounce_time: float,
        factory: Any,
        on_change: Callable[[bool], None],
        clock: Clock = SYSTEM,
    ) -> None:
        self.label = label
        self.clock = clock
        self.pin = pin
        self.pull_up = pull_up
        self.bounce_time = bounce_time
        self.on_change = on_change
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: Timer | None = None
        try:
            self.device = DigitalInputDevice(
                pin=pin, pull_up=pull_up, bounce_time=bounce_time, pin_factory=factory
            )
        except Exception as exc:
            raise GpioError(f"{label}: cannot claim GPIO {pin}: {exc}") from None
        self.stable = self.read()

    def read(self) -> bool:
        """gpiozero's "active": the switch is closed (pulls the pin away from its pull)."""
        return bool(self.device.value)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reacting to edges, on this loop."""
        self.loop = loop
        self.stable = self.read()
        self.device.when_activated = self._edge
        self.device.when_deactivated = self._edge

    def _edge(self) -> None:  # a gpiozero thread (or the caller of drive_high on mock pins)
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: edged is stopping
                loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        assert self.loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.clock.call_later(self.loop, self.bounce_time, self._settle)

    def _settle(self) -> None:
        self._timer = None
        if self.device.closed:
            return
        value = self.read()
        if value != self.stable:
            self.stable = value
            self.on_change(value)

    def poll(self) -> None:
        """Catch an edge the backend lost: a level differing from the settled one re-arms."""
        idle = self.loop is not None and self._timer is None and not self.device.closed
        if idle and self.read() != self.stable:
            self._arm()

    def close(self) -> None:
        """Stop reacting and release the pin."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.loop = None
        self.device.close()


class Guard:
    """A thread that forces quiet any output left on past its limit without a hold."""

    def __init__(
        self, on_trip: Callable[[Output], None], interval: float = 0.05, clock: Clock = SYSTEM
    ) -> None:
        self.outputs: list[Output] = []
        self.on_trip = on_trip
        self.interval = interval
        self.clock = clock
        self.trips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edged-gpio-guard", daemon=True)

    def start(self) -> None:
        """Start checking."""
        self._thread.start()

    def stop(self) -> None:
        """Stop checking (outputs are closed separately)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    @property
    def alive(self) -> bool:
        """The guard thread runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> None:
        """One round: trip every output on past its limit at the clock's time now."""
        now = self.clock.monotonic()
        for output in self.outputs:
            try:
                if output.trip(now):
                    self.trips += 1
                    self.on_trip(output)
            except Exception:
                log.exception("guard: checking %s failed", output.label)
