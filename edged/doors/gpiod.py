"""A gpiozero pin factory over the kernel's GPIO character device, through libgpiod.

``gpio.pin_factory = "gpiod"`` drives the lines of one chip (``gpio.chip``, ``/dev/gpiochip0`` by
default) with Debian's ``python3-libgpiod``: the v1 API (1.6, bookworm) and the v2 API (2.x,
trixie) are both spoken, whichever is installed. A pin number is the line's offset on that chip.

Why libgpiod: gpiozero 1.6.2 (the version on both releases) has no character-device factory of its
own, and gpiozero 2's lgpio factory needs lgpio, which is not in Debian (only in the Raspberry Pi
archive). libgpiod is the kernel's own library for the character device, packaged on both
releases, and it works on every board, the Pi included.

Outputs are requested at their initial value (``output_with_state``: one request carrying the
level, never a moment at the other level). Inputs are requested with edge detection on both edges
and the bias gpiozero asks for (pull-up, pull-down, none); a kernel without bias support gets the
request without it, said once in the log. Edges are read by one thread per input line, blocked in
``select`` on the request's file descriptor and a wake-up pipe: no polling. Debouncing is edged's
own (``edged.doors.gpio.Input``), so ``bounce`` is accepted and kept, not passed to the kernel.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any
from weakref import ref

from gpiozero.exc import GPIOPinInUse, PinInvalidFunction, PinInvalidPull
from gpiozero.pins import Factory, Pin

from edged.errors import GpioError

log = logging.getLogger(__name__)

DEFAULT_CHIP = "/dev/gpiochip0"
CONSUMER = "edged"
PULLS = ("up", "down", "floating")


class _V1:
    """libgpiod's v1 Python API (python3-libgpiod 1.x): a chip object, lines requested from it."""

    def __init__(self, gpiod: Any, path: str) -> None:
        self.gpiod = gpiod
        self.chip = gpiod.Chip(path)
        self.lines = int(self.chip.num_lines())

    def output(self, offset: int, value: bool) -> Any:
        line = self.chip.get_line(offset)
        line.request(consumer=CONSUMER, type=self.gpiod.LINE_REQ_DIR_OUT, default_val=int(value))
        return line

    def input(self, offset: int, pull: str | None) -> Any:
        g = self.gpiod
        line = self.chip.get_line(offset)
        bias = {
            None: 0,
            "up": g.LINE_REQ_FLAG_BIAS_PULL_UP,
            "down": g.LINE_REQ_FLAG_BIAS_PULL_DOWN,
            "floating": g.LINE_REQ_FLAG_BIAS_DISABLE,
        }[pull]
        line.request(consumer=CONSUMER, type=g.LINE_REQ_EV_BOTH_EDGES, flags=bias)
        return line

    def set(self, line: Any, offset: int, value: bool) -> None:
        line.set_value(int(value))

    def get(self, line: Any, offset: int) -> bool:
        return bool(line.get_value())

    def fd(self, line: Any) -> int:
        return int(line.event_get_fd())

    def edges(self, line: Any) -> list[bool]:
        """The edges waiting (True: rising)."""
        return [line.event_read().type == self.gpiod.LineEvent.RISING_EDGE]

    def release(self, line: Any) -> None:
        line.release()

    def close(self) -> None:
        self.chip.close()


class _V2:
    """libgpiod's v2 Python API (python3-libgpiod 2.x): one line request per pin."""

    def __init__(self, gpiod: Any, path: str) -> None:
        self.gpiod = gpiod
        self.path = path
        self.line = importlib.import_module(f"{gpiod.__name__}.line")
        with gpiod.Chip(path) as chip:
            self.lines = int(chip.get_info().num_lines)

    def _request(self, offset: int, **settings: Any) -> Any:
        config = {offset: self.gpiod.LineSettings(**settings)}
        return self.gpiod.request_lines(self.path, consumer=CONSUMER, config=config)

    def _value(self, value: bool) -> Any:
        return self.line.Value.ACTIVE if value else self.line.Value.INACTIVE

    def output(self, offset: int, value: bool) -> Any:
        return self._request(
            offset, direction=self.line.Direction.OUTPUT, output_value=self._value(value)
        )

    def input(self, offset: int, pull: str | None) -> Any:
        bias = self.line.Bias
        settings: dict[str, Any] = {
            "direction": self.line.Direction.INPUT,
            "edge_detection": self.line.Edge.BOTH,
        }
        if pull is not None:
            settings["bias"] = {
                "up": bias.PULL_UP,
                "down": bias.PULL_DOWN,
                "floating": bias.DISABLED,
            }[pull]
        return self._request(offset, **settings)

    def set(self, request: Any, offset: int, value: bool) -> None:
        request.set_value(offset, self._value(value))

    def get(self, request: Any, offset: int) -> bool:
        return bool(request.get_value(offset) == self.line.Value.ACTIVE)

    def fd(self, request: Any) -> int:
        return int(request.fd)

    def edges(self, request: Any) -> list[bool]:
        rising = self.gpiod.EdgeEvent.Type.RISING_EDGE
        return [event.event_type == rising for event in request.read_edge_events()]

    def release(self, request: Any) -> None:
        request.release()

    def close(self) -> None:
        pass


class GpiodPin(Pin):  # type: ignore[misc]  # gpiozero has no type hints
    """One line of the chip, requested when gpiozero first sets its function."""

    def __init__(self, factory: GpiodFactory, offset: int) -> None:
        super().__init__()
        self.factory = factory
        self.number = offset
        self.api = factory.api
        self._lock = threading.RLock()
        self._function = "input"
        self._pull = "floating"
        self._pull_set = False  # until gpiozero asks for a pull, the line's bias is left as it is
        self._bounce: float | None = None
        self._edges = "both"
        self._when_changed: Callable[[float, bool], None] | None = None
        self._handle: Any = None
        self._watcher: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"{self.factory.chip}:{self.number}"

    @property
    def info(self) -> Any:
        """What gpiozero 2 reads of a pin: its name (releasing a reservation, messages)."""
        return _Info(self.number, f"GPIO{self.number}")

    def _request_output(self, value: bool) -> None:
        self._release()
        self._handle = self._call("output", self.api.output, self.number, value)
        self._function = "output"

    def _request_input(self) -> None:
        self._release()
        pull = self._pull if self._pull_set else None
        try:
            self._handle = self.api.input(self.number, pull)
        except OSError as exc:
            if pull is None:
                raise self._error("input", exc) from None
            log.warning("gpiod: %s: no bias %s (%s): requested without it", self, pull, exc)
            self._handle = self._call("input", self.api.input, self.number, None)
        except Exception as exc:
            raise self._error("input", exc) from None
        self._function = "input"
        self._watch()

    def _call(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: Exception) -> GpioError:
        return GpioError(f"gpiod: cannot request {self} as {what}: {exc}")

    def _watch(self) -> None:
        self._wake = os.pipe()
        fd = self.api.fd(self._handle)
        self._watcher = threading.Thread(
            target=self._run, args=(fd, self._wake[0]), name=f"edged-gpiod-{self.number}"
        )
        self._watcher.daemon = True
        self._watcher.start()

    def _run(self, fd: int, wake: int) -> None:
        handle = self._handle
        while True:
            ready, _, _ = select.select([fd, wake], [], [])
            if wake in ready:
                return
            try:
                edges = self.api.edges(handle)
            except Exception as exc:  # the request went away under the thread: stop watching
                log.debug("gpiod: %s: reading edges failed: %s", self, exc)
                return
            for rising in edges:
                self._changed(rising)

    def _changed(self, rising: bool) -> None:
        callback = self._when_changed
        wanted = self._edges == "both" or (self._edges == "rising") == rising
        if callback is not None and wanted and self._edges != "none":
            callback(self.factory.ticks(), rising)

    def _release(self) -> None:
        if self._watcher is not None and self._wake is not None:
            os.write(self._wake[1], b"x")
            self._watcher.join(2)
            for end in self._wake:
                os.close(end)
        self._watcher = self._wake = None
        if self._handle is not None:
            with contextlib.suppress(Exception):
                self.api.release(self._handle)
            self._handle = None

    def close(self) -> None:
        """Release the line (the kernel then leaves it to the chip's own default)."""
        with self._lock:
            self._when_changed = None
            self._release()

    def output_with_state(self, state: bool) -> None:
        """Request the line as an output at ``state``, in the one request."""
        with self._lock:
            self._request_output(bool(state))

    def input_with_pull(self, pull: str) -> None:
        """Request the line as an input with ``pull``."""
        with self._lock:
            self._set_pull_value(pull)
            self._request_input()

    def _get_function(self) -> str:
        return self._function

    def _set_function(self, value: str) -> None:
        with self._lock:
            if value == "output":
                if self._function != "output" or self._handle is None:
                    self._request_output(False)
            elif value == "input":
                if self._function != "input" or self._handle is None:
                    self._request_input()
            else:
                raise PinInvalidFunction(f"{self}: function {value!r}: input or output only")

    def _get_state(self) -> bool:
        handle = self._handle  # no lock: an edge callback may read while close() waits for it
        if handle is None:
            with self._lock:
                self._set_function(self._function)
                handle = self._handle
        return self.api.get(handle, self.number)

    def _set_state(self, value: bool) -> None:
        with self._lock:
            if self._function != "output" or self._handle is None:
                raise PinInvalidFunction(f"{self}: not an output")
            self.api.set(self._handle, self.number, bool(value))

    def _get_pull(self) -> str:
        return self._pull

    def _set_pull_value(self, value: str) -> None:
        if value not in PULLS:
            raise PinInvalidPull(f"{self}: pull {value!r}: one of {', '.join(PULLS)}")
        self._pull = value
        self._pull_set = True

    def _set_pull(self, value: str) -> None:
        with self._lock:
            self._set_pull_value(value)
            if self._function == "input" and self._handle is not None:
                self._request_input()  # the bias is part of the request

    def _get_bounce(self) -> float | None:
        return self._bounce

    def _set_bounce(self, value: float | None) -> None:
        self._bounce = value  # edged debounces itself (edged.doors.gpio.Input)

    def _get_edges(self) -> str:
        return self._edges

    def _set_edges(self, value: str) -> None:
        self._edges = value

    def _get_when_changed(self) -> Callable[[float, bool], None] | None:
        return self._when_changed

    def _set_when_changed(self, value: Callable[[float, bool], None] | None) -> None:
        self._when_changed = value


class _Info:
    """The few fields of gpiozero 2's ``PinInfo`` a pin of this factory has."""

    def __init__(self, number: int, name: str) -> None:
        self.number = number
        self.name = name
        self.names = frozenset({number, name})
        self.pull = ""


class GpiodFactory(Factory):  # type: ignore[misc]  # gpiozero has no type hints
    """Pins of one GPIO chip, by line offset, over libgpiod (v1 or v2 API)."""

    def __init__(self, chip: str = DEFAULT_CHIP, gpiod: Any = None) -> None:
        super().__init__()
        self.chip = chip
        try:
            module = gpiod if gpiod is not None else importlib.import_module("gpiod")
        except ImportError as exc:
            raise GpioError(f"gpiod: python3-libgpiod is not installed ({exc})") from None
        api = _V2 if hasattr(module, "request_lines") else _V1
        self.version = 2 if api is _V2 else 1
        try:
            self.api: _V1 | _V2 = api(module, chip)
        except Exception as exc:
            raise GpioError(f"gpiod: cannot open GPIO chip {chip}: {exc}") from None
        self._pins: dict[int, GpiodPin] = {}
        self._held: dict[int, list[Any]] = {}
        log.info("gpiod: %s, %d lines (libgpiod API v%d)", chip, self.api.lines, self.version)

    def _offset(self, spec: Any) -> int:
        name = str(spec)
        digits = name[4:] if name.upper().startswith("GPIO") else name
        if not digits.isdecimal() or int(digits) >= self.api.lines:
            raise GpioError(f"gpiod: {self.chip} has no line {spec!r} (0-{self.api.lines - 1})")
        return int(digits)

    def pin(self, spec: Any) -> GpiodPin:
        """The pin for line offset ``spec`` (the same object every time)."""
        offset = self._offset(spec)
        with self._res_lock:
            if offset not in self._pins:
                self._pins[offset] = GpiodPin(self, offset)
            return self._pins[offset]

    def reserve_pins(self, requester: Any, *names: Any) -> None:
        """Reserve lines by offset (gpiozero 2's own version looks them up on a Pi header)."""
        with self._res_lock:
            for offset in map(self._offset, names):
                for holder in self._held.get(offset, []):
                    other = holder()
                    if other is not None and requester._conflicts_with(other):
                        raise GPIOPinInUse(f"line {offset} is already in use by {other!r}")
                self._held.setdefault(offset, []).append(ref(requester))

    def release_pins(self, reserver: Any, *names: Any) -> None:
        """Drop ``reserver``'s reservations of these lines."""
        with self._res_lock:
            for offset in map(self._offset, names):
                kept = [r for r in self._held.get(offset, []) if r() not in (reserver, None)]
                self._held[offset] = kept

    def release_all(self, reserver: Any) -> None:
        """Drop every reservation of ``reserver``."""
        self.release_pins(reserver, *list(self._held))

    def close(self) -> None:
        """Release every line and the chip."""
        with self._res_lock:
            pins = list(self._pins.values())
            self._pins.clear()
        for pin in pins:
            pin.close()
        self.api.close()

    def ticks(self) -> float:
        """Monotonic seconds."""
        return time.monotonic()

    def ticks_diff(self, later: float, earlier: float) -> float:
        """Seconds between two ``ticks()``."""
        return later - earlier

    def _get_board_info(self) -> None:
        return None

    def _get_pi_info(self) -> None:
        return None
