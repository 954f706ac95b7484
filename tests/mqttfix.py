"""A real Mosquitto on a free loopback port, and a subscriber that keeps what it hears.

The broker is Debian's ``mosquitto`` started with a config file in the test's tmp directory
(persistence on, so a stopped and restarted broker keeps its sessions and retained messages).
Tests skip with a clear reason when the program is absent; CI installs it (.ci/run).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.mqtt.link import new_client

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process; ``stop``/``start`` keep its port and its persistence file."""

    def __init__(self, root: Path, name: str = "broker", extra: str = "", tls: Any = None) -> None:
        assert MOSQUITTO is not None
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.name = name
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # as root mosquitto would switch to user mosquitto, who cannot read tmp_path
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "persistence true",
            f"persistence_location {self.root}/",
            "max_queued_messages 0",  # no limit: a test counts every message
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if tls is not None:
            lines += [
                f"cafile {tls['ca']}",
                f"certfile {tls['cert']}",
                f"keyfile {tls['key']}",
                "require_certificate true" if tls.get("require") else "require_certificate false",
            ]
        self.conf = self.root / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
        self.log = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: mosquitto saves its sessions and retained messages first)."""
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


class Subscriber:
    """A paho client that keeps every message it receives (topic, payload, retain flag)."""

    def __init__(
        self,
        port: int,
        topics: list[str],
        client_id: str = "test-subscriber",
        persistent: bool = True,
        tls: dict[str, str] | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        # persistent: a session the broker keeps (and queues for) while this is away
        client = new_client(client_id, clean=not persistent)
        if tls is not None:
            client.tls_set(
                ca_certs=tls["ca"],
                certfile=tls.get("cert"),
                keyfile=tls.get("key"),
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.topics = topics
        client.reconnect_delay_set(0.2, 1)
        client.on_connect = self._connected
        client.on_message = self._message
        self.client = client
        client.connect_async("127.0.0.1", port, 30)
        client.loop_start()
        assert self.connected.wait(10), "the subscriber did not connect"

    def _connected(self, client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[Any]:
        return [json.loads(p) for p in self.on(topic) if p]

    def wait(self, check: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return check()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_toml(port: int, extra: str = "") -> str:
    """An ``[mqtt]`` section for a broker on loopback."""
    return f'\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n{extra}\n'


def unique_in_order(records: list[dict[str, Any]]) -> list[int]:
    """Record ids in first-arrival order, second copies dropped by their key (as a consumer)."""
    seen: set[str] = set()
    ids = []
    for r in records:
        if r["key"] not in seen:
            seen.add(r["key"])
            ids.append(r["id"])
    return ids
