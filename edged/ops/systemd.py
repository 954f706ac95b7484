"""Talking to systemd without libsystemd: ``sd_notify`` is one datagram to ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op, so the daemon code never
asks whether it runs under systemd. Failures to send are logged at DEBUG and never raise: a
lost notification must not take the daemon down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends ``sd_notify`` state lines to the service manager, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace (a NUL byte on the wire).
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_usec = _watchdog_usec(env)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True when it was sent."""
        if not self.address:
            return False
        payload = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", lines, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Start-up (or a reload) is complete."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def reloading(self) -> bool:
        """A configuration reload begins; ``ready()`` ends it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading configuration")

    def stopping(self) -> bool:
        """Shutdown begins."""
        return self.send("STOPPING=1", "STATUS=stopping: finishing requests in flight")

    def watchdog(self) -> bool:
        """The keep-alive ping: this process is still making progress."""
        return self.send("WATCHDOG=1")

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the watchdog timeout), or None without a watchdog."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None


def _watchdog_usec(env: Mapping[str, str]) -> int:
    """``WATCHDOG_USEC`` when it is meant for this process (``WATCHDOG_PID``), else 0."""
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return 0
    value = env.get("WATCHDOG_USEC", "")
    return int(value) if value.isdecimal() else 0


async def keepalive(notifier: Notifier, status: Callable[[], str] | None = None) -> None:
    """Ping the watchdog from the event loop itself: a wedged loop stops the pings."""
    interval = notifier.watchdog_interval
    if interval is None:
        return
    while True:
        notifier.send("WATCHDOG=1", *([f"STATUS={status()}"] if status else []))
        await asyncio.sleep(interval)
