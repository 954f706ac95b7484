"""The daemon under systemd: SIGHUP reload, graceful stop, sd_notify from a real process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edged import config
from edged.config import Config
from tests.conftest import BASE_TOML, SERIAL, SERIAL_OLD, LiveDaemon, auth_request, recognition


def write_config(path: Path, extra: str = "", **ports: int) -> Path:
    text = BASE_TOML.format(state=path.parent / "state", serial=SERIAL, serial_old=SERIAL_OLD)
    for name, port in ports.items():
        text = text.replace('listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{port}"] #{name}', 1)
    path.write_text(text + extra)
    return path


def test_reload_applies_new_tips_and_terminals(
    tmp_path: Path, start_live: Callable[[Config], LiveDaemon]
) -> None:
    path = write_config(tmp_path / "edged.toml")
    live = start_live(config.load(str(path)))
    stranger = auth_request(user_id="nobody")
    assert httpx.post(f"{live.url}/auth", json=stranger).json()["data"]["customtips"] != "Who?"
    extra = '[tips]\nunknown_person = "Who?"\n[[terminals]]\nname = "new"\nserial = "NEW1"\n'
    write_config(path, extra)
    assert live.call(live.daemon.reload) is True
    assert (
        httpx.post(f"{live.url}/auth", json=auth_request(user_id="x")).json()["data"]["customtips"]
        == "Who?"
    )
    assert httpx.post(f"{live.url}/eventRcv", json=recognition(serial="NEW1")).status_code == 200
    assert live.daemon.cfg.terminal_by_serial("NEW1") is not None


def test_broken_reload_keeps_the_running_config(
    tmp_path: Path, start_live: Callable[[Config], LiveDaemon], caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path / "edged.toml")
    live = start_live(config.load(str(path)))
    path.write_text(path.read_text() + "\n[logging]\nlevle = 'debug'\n")
    assert live.call(live.daemon.reload) is False
    refused = [r for r in caplog.records if r.levelno == logging.ERROR and "reload" in r.message]
    assert refused and "levle" in refused[0].message
    assert live.daemon.receiver.cfg.source == str(path)
    assert httpx.post(f"{live.url}/eventRcv", json=recognition()).status_code == 200


def test_reload_under_load_drops_no_request(
    tmp_path: Path, start_live: Callable[[Config], LiveDaemon]
) -> None:
    path = write_config(tmp_path / "edged.toml")
    live = start_live(config.load(str(path)))
    statuses: list[int] = []

    def push(worker: int) -> None:
        with httpx.Client(base_url=live.url) as client:
            for i in range(25):
                body = recognition(uuid=f"w{worker}-{i}")
                statuses.append(client.post("/eventRcv", json=body).status_code)

    workers = [threading.Thread(target=push, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    reloads = 0
    while any(w.is_alive() for w in workers) and reloads < 50:
        assert live.call(live.daemon.reload) is True
        reloads += 1
    for worker in workers:
        worker.join(30)
    assert reloads > 1
    assert statuses == [200] * 100


def test_stop_finishes_the_request_in_flight(
    cfg: Config, start_live: Callable[[Config], LiveDaemon]
) -> None:
    live = start_live(cfg)
    safe: list[str] = []
    live.daemon.on_stop.append(lambda: safe.append("outputs safe"))
    body = json.dumps(recognition()).encode()
    head = (
        f"POST /eventRcv HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.daemon.receiver_port), timeout=10) as sock:
        sock.sendall(head + body[:20])
        time.sleep(0.2)  # the request is in flight: headers read, body incomplete
        started = time.monotonic()
        live.loop.call_soon_threadsafe(live.daemon.stop)
        deadline = time.monotonic() + 5
        while True:  # no new connections once stopping
            try:
                socket.create_connection(("127.0.0.1", live.daemon.receiver_port), 2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "still accepting connections 5 s after the stop"
            time.sleep(0.01)
        sock.sendall(body[20:])
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 200")
    live.thread.join(10)
    assert not live.thread.is_alive() and time.monotonic() - started < 10
    assert safe == ["outputs safe"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_systemd_lifecycle_of_a_real_process(tmp_path: Path) -> None:
    recv_port, admin_port = free_port(), free_port()
    path = write_config(tmp_path / "edged.toml", receiver=recv_port, admin=admin_port)
    notify_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    sock.settimeout(15)
    env = {**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "-c", str(path)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )

    def next_state(*wanted: str) -> list[str]:
        while True:
            lines = sock.recv(4096).decode().split("\n")
            if lines[0] in wanted:
                return lines

    try:
        ready = next_state("READY=1")
        # READY=1 promises the listeners are up.
        assert httpx.get(f"http://127.0.0.1:{admin_port}/healthz").status_code == 200
        assert ready[1].startswith("STATUS=serving 2 terminals")
        assert next_state("WATCHDOG=1")[1].startswith("STATUS=serving")
        proc.send_signal(signal.SIGHUP)
        assert next_state("RELOADING=1", "READY=1")[0] == "RELOADING=1"
        assert next_state("READY=1", "RELOADING=1")[0] == "READY=1"
        proc.send_signal(signal.SIGTERM)
        assert next_state("STOPPING=1")[0] == "STOPPING=1"
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        _, stderr = proc.communicate()
        sock.close()
    assert "configuration reloaded" in stderr and "edged stopped" in stderr


def test_a_running_daemon_freezes_what_start_up_made(tmp_path: Path) -> None:
    """``edged run`` puts start-up's objects out of the cyclic collector's reach once ready:
    a full collection then walks only what was made since (docs/performance.md)."""
    recv_port, admin_port = free_port(), free_port()
    path = write_config(tmp_path / "edged.toml", receiver=recv_port, admin=admin_port)
    cmd = [sys.executable, "-m", "edged", "run", "-c", str(path), "--log-level", "debug"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    frozen = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        while frozen is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            if "heap settled:" in line:
                frozen = int(line.split("heap settled:")[1].split()[0])
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert frozen is not None and frozen > 10_000
