"""sd_notify against a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.ops import systemd


class Listener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, str]]:
    path = str(tmp_path / "notify.sock")
    sock = Listener(path)
    yield sock, path
    sock.close()


def test_ready_with_status_is_one_datagram(listener: tuple[Listener, str]) -> None:
    sock, path = listener
    notifier = systemd.Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("serving 2 terminals")
    assert sock.receive() == ["READY=1", "STATUS=serving 2 terminals"]


def test_abstract_socket_name_with_at_sign() -> None:
    name = f"edged-test-{uuid.uuid4().hex}"
    sock = Listener("\0" + name)
    try:
        notifier = systemd.Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.stopping()
        assert sock.receive()[0] == "STOPPING=1"
    finally:
        sock.close()


def test_reloading_carries_monotonic_time(listener: tuple[Listener, str]) -> None:
    sock, path = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    systemd.Notifier({"NOTIFY_SOCKET": path}).reloading()
    lines = sock.receive()
    assert lines[0] == "RELOADING=1"
    usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_without_systemd_nothing_is_sent() -> None:
    notifier = systemd.Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog_interval is None


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = systemd.Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.watchdog() is False


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(env: dict[str, str], interval: float) -> None:
    assert systemd.Notifier(env).watchdog_interval == interval


def test_keepalive_pings_stop_while_the_loop_is_wedged(listener: tuple[Listener, str]) -> None:
    sock, path = listener
    notifier = systemd.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    arrivals: list[tuple[float, list[str]]] = []

    def collect() -> None:
        while (lines := sock.receive()) != ["DONE"]:
            arrivals.append((time.monotonic(), lines))

    collector = threading.Thread(target=collect)
    collector.start()

    async def scenario() -> None:
        task = asyncio.create_task(systemd.keepalive(notifier, lambda: "fine"))
        await asyncio.sleep(0.3)
        time.sleep(0.6)  # a wedged event loop: a blocking call
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(scenario())
    notifier.send("DONE")
    collector.join()
    assert all(lines == ["WATCHDOG=1", "STATUS=fine"] for _, lines in arrivals)
    times = [t for t, _ in arrivals]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 5
    assert max(gaps) >= 0.5  # no ping while the loop was blocked
    assert sorted(gaps)[len(gaps) // 2] < 0.2  # otherwise every ~50 ms
