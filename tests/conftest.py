"""Shared fixtures: real SQLite files in tmp_path, the ASGI stack, a live daemon on loopback."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from edged import config
from edged.ops import wiring
from tests.timefix import FakeClock

if TYPE_CHECKING:
    from edged.sim.terminal import SimulatedTerminal

SERIAL = "PS71HD01MC22C00014"
SERIAL_OLD = "PS71HD01MC22C00015"

BASE_TOML = """
[site]
name = "test site"
timezone = "Europe/Berlin"

[receiver]
listen = ["127.0.0.1:0"]
allowed_networks = ["127.0.0.0/8", "::1/128"]

[admin]
listen = ["127.0.0.1:0"]
token = "test-token"

[storage]
state_dir = "{state}"

[[terminals]]
name = "lobby"
serial = "{serial}"

[[terminals]]
name = "old-gate"
serial = "{serial_old}"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that stands still until the test advances it (tests/timefix.py)."""
    return FakeClock()


@pytest.fixture
def mock_factory() -> Iterator[MockFactory]:
    """gpiozero's MockFactory as the process-wide pin factory; every device closed after."""
    factory = MockFactory()
    Device.pin_factory = factory
    yield factory
    for refs in list(getattr(factory, "_reservations", {}).values()):
        for ref in list(refs):
            device = ref()
            if device is not None:
                device.close()
    factory.reset()
    Device.pin_factory = None


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """logs.setup() configures the process's root logger: put it back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


FIRMWARES = ("1.0", "1.1", "1.2.1", "1.3.0")  # every firmware a site may run (simapi.FIRMWARES)


@pytest.fixture(params=FIRMWARES)
async def sim(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[SimulatedTerminal]:
    """A simulated terminal over HTTPS on loopback (tests/simfix.py), one per firmware."""
    from tests.simfix import make_sim

    terminal = make_sim(tmp_path, firmware=request.param)
    await terminal.start()
    yield terminal
    await terminal.stop()


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., config.Config]:
    """Build a validated Config for tests; ``extra`` TOML is appended to the base."""

    def build(extra: str = "", state: Path | None = None) -> config.Config:
        text = BASE_TOML.format(
            state=state or tmp_path / "state", serial=SERIAL, serial_old=SERIAL_OLD
        )
        return config.parse(text + extra, "test.toml")

    return build


@pytest.fixture
def cfg(make_config: Callable[..., config.Config]) -> config.Config:
    """The base test configuration (two terminals, state in tmp_path)."""
    return make_config()


class LiveDaemon:
    """A real daemon (hypercorn on loopback sockets) in a background thread."""

    def __init__(self, cfg: config.Config) -> None:
        self.daemon = wiring.build(cfg)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.daemon.on_ready.append(self.ready.set)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="live-daemon", daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError(f"daemon did not start: {self.error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.daemon.serve())
        except BaseException as exc:
            self.error = exc
        finally:  # as asyncio.run does: let every task finish before the loop closes
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.receiver_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.admin_port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the daemon's loop and return its result."""
        done = threading.Event()
        box: list[Any] = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        done.wait(5)
        return box[0] if box else None

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.daemon.stopping.set)
            # A clean stop takes well under a second; a loaded machine (CI's VM tests beside
            # the suite) can stretch it, so this waits long and then says what hung.
            self.thread.join(60)
            assert not self.thread.is_alive(), "the daemon did not stop within 60 s"
        self.daemon.close()
        self.loop.close()


@pytest.fixture
def live(cfg: config.Config) -> Iterator[LiveDaemon]:
    """A daemon serving the base configuration on loopback."""
    daemon = LiveDaemon(cfg)
    yield daemon
    daemon.stop()


@pytest.fixture
def start_live() -> Iterator[Callable[[config.Config], LiveDaemon]]:
    """Start daemons on demand (several, or again after a stop); all stopped at the end."""
    started: list[LiveDaemon] = []

    def start(cfg: config.Config) -> LiveDaemon:
        daemon = LiveDaemon(cfg)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def recognition(
    serial: str = SERIAL, uuid: str = "u-1", ts: float | None = None, **fields: Any
) -> dict[str, Any]:
    """A current-firmware (1.2.1+) recognition push."""
    data: dict[str, Any] = {
        "deviceSN": serial,
        "uuid": uuid,
        "recognitionType": 1,
        "recognizeScore": 0.97,
        "mask": 1,
        "mode": 0,
        "entry_mode": 1,
        "abnormal_type": 0,
        "pass": True,
        "timestamp": int(ts if ts is not None else time.time()),
        "bodyTemperature": 36.5,
        "rgb_image": "",
        "user": {
            "name": "Ann",
            "user_id": "e-1",
            "type": 1,
            "ic_number": "11223344",
            "job_number": "J1",
            "pin": "1234",
            "groups": [{"id": 1, "name": "staff"}],
        },
    }
    data.update(fields)
    return {"type": 0, "data": data}


def auth_request(
    serial: str = SERIAL, user_id: str | None = "e-1", ts: float | None = None, **fields: Any
) -> dict[str, Any]:
    """A flat remote-authentication request."""
    body: dict[str, Any] = {
        "deviceSN": serial,
        "recognizeStatus": 4,
        "recognizeScore": 0.95,
        "entry_mode": 1,
        "mask": 1,
        "rgb_image": "",
        "bodyTemperature": 36.4,
        "timestamp": int(ts if ts is not None else time.time()),
        "qrcode_content": "",
        "user": {"name": "Ann", "user_id": user_id, "type": 1} if user_id else None,
    }
    body.update(fields)
    return body


def grant_person(db_path: Path, pid: str = "e-1", door: str = "lobby", **fields: Any) -> None:
    """Import a person in group 'staff', which may use ``door`` at any time."""
    from zoneinfo import ZoneInfo

    from edged.access import people
    from edged.store import events as store

    row = {"id": pid, "name": "Ann Example", "groups": "staff", **fields}
    doc = {"people": [row], "permissions": [{"group": "staff", "door": door}]}
    parsed = people.parse_document(doc, ZoneInfo("UTC"))
    conn = store.connect(db_path)
    try:
        people.apply_document(conn, parsed, replace=False)
    finally:
        conn.close()


def asgi_client(app: Any, host: str = "127.0.0.1") -> httpx.AsyncClient:
    """An httpx client through the ASGI stack, from a chosen source address."""
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def face_jpeg(seed: int = 0, size: int = 600) -> bytes:
    """A small JPEG-shaped photo (SOI … EOI), different for each seed."""
    body = (f"face-{seed}-".encode() * (size // 8 + 1))[: max(0, size - 6)]
    return b"\xff\xd8\xff\xe0" + body + b"\xff\xd9"
