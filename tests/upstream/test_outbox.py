"""Store and forward against a fake upstream over real HTTP, through a live daemon."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edged import config
from edged.cli import main as cli
from edged.receive.normalize import normalize
from edged.receive.receiver import ack_body
from edged.store import events as store
from edged.upstream import outbox
from tests.conftest import BASE_TOML, SERIAL, SERIAL_OLD, LiveDaemon, auth_request, recognition
from tests.fakeupstream import FakeUpstream
from tests.timefix import until

FORWARD = """
[upstream]
forward_url = "{url}/records"
forward_batch_size = {batch}
forward_interval = 0.05
forward_retry_min = 0.02
forward_retry_max = 0.1
forward_include_images = {images}
"""


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


def forward_config(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    batch: int = 50,
    images: bool = False,
) -> config.Config:
    return make_config(FORWARD.format(url=fake.url, batch=batch, images=str(images).lower()))


def stored_keys(cfg: config.Config) -> list[str]:
    conn = sqlite3.connect(cfg.storage.database_path)
    keys = [r[0] for r in conn.execute("SELECT dedup_key FROM events ORDER BY id")]
    conn.close()
    return keys


def check_delivery(fake: FakeUpstream, expected: list[str]) -> list[dict[str, Any]]:
    """Every record arrived, first arrivals in id order, and a repeat is always the same record."""
    received = fake.records()
    first: dict[str, dict[str, Any]] = {}
    for record in received:
        copy = first.setdefault(record["key"], record)
        assert copy == record, f"key {record['key']} carried two different records"
    assert list(first) == expected
    ids = [r["id"] for r in first.values()]
    assert ids == sorted(ids)
    return received


def push(live: LiveDaemon, count: int, start: int = 0) -> None:
    with httpx.Client() as client:
        for i in range(start, start + count):
            body = recognition(uuid=f"u-{i}", serial=SERIAL if i % 2 else SERIAL_OLD)
            assert client.post(f"{live.url}/eventRcv", json=body).status_code == 200


def test_every_record_is_forwarded_in_order(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    cfg = forward_config(make_config, fake, batch=7)
    live = start_live(cfg)
    push(live, 20)
    httpx.post(f"{live.url}/auth", json=auth_request(user_id="nobody"))
    httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="old", ts=time.time() - 3600))
    assert fake.wait_for(lambda: len(fake.records()) >= 22)
    received = check_delivery(fake, stored_keys(cfg))
    assert all(len(batch) <= 7 for batch in fake.state.batches)
    auth = next(r for r in received if r["kind"] == "auth")
    assert auth["decision"] == "deny" and auth["source"] == "cache"
    assert auth["response"]["data"]["pass"] is False and auth["payload"]["deviceSN"] == SERIAL
    replayed = next(r for r in received if r["key"].endswith(":old"))
    assert replayed["replayed"] is True and replayed["replay_reason"] == "stale"
    assert fake.wait_for(lambda: outbox_status(live)["depth"] == 0)
    status = outbox_status(live)
    assert status["forwarded_up_to"] == 22 and status["state"] == "up"


def outbox_status(live: LiveDaemon) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{live.admin_url}/api/v1/outbox").json()
    return result


def test_outbox_holds_records_while_the_upstream_fails(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    fake.state.forward_mode = "http500"
    live = start_live(forward_config(make_config, fake, batch=4))
    push(live, 10)
    assert fake.wait_for(lambda: outbox_status(live)["state"] == "down")
    status = outbox_status(live)
    assert status["depth"] == 10 and status["oldest_id"] == 1 and status["last_error"] == "http 500"
    ready = httpx.get(f"{live.admin_url}/readyz").json()
    assert ready["ready"] is True and ready["checks"]["upstream"]["outbox"]["depth"] == 10
    fake.state.forward_mode = "ok"
    assert fake.wait_for(lambda: outbox_status(live)["depth"] == 0)
    check_delivery(fake, stored_keys(live.daemon.cfg))


@pytest.mark.parametrize(
    ("mode", "chunked", "error"),
    [
        ("lost", False, "http 503"),
        ("garbage", False, 'answer is not JSON: "ok?"'),
        ("code500", False, 'not acknowledged: code 500: "internal"'),  # what came, not what not
        ("huge", False, f"not an acknowledgement: answer larger than {outbox.MAX_ACK_BYTES} bytes"),
        ("huge", True, f"not an acknowledgement: answer larger than {outbox.MAX_ACK_BYTES} bytes"),
    ],
)
def test_unacknowledged_batch_is_resent_with_the_same_keys(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    start_live: Callable[[config.Config], LiveDaemon],
    mode: str,
    chunked: bool,
    error: str,
) -> None:
    fake.state.forward_mode, fake.state.chunked = mode, chunked
    live = start_live(forward_config(make_config, fake, batch=5))
    push(live, 5)
    assert fake.wait_for(lambda: len(fake.state.batches) >= 3)
    status = outbox_status(live)
    assert status["depth"] == 5  # nothing left the outbox
    assert status["last_error"] == error
    fake.state.forward_mode = "ok"
    assert fake.wait_for(lambda: outbox_status(live)["depth"] == 0)
    received = check_delivery(fake, stored_keys(live.daemon.cfg))
    assert len(received) > 5  # duplicates arrived, each with its own key


def test_restart_in_the_middle_loses_and_reorders_nothing(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    cfg = forward_config(make_config, fake, batch=5)
    fake.state.forward_mode = "http500"
    first = start_live(cfg)
    push(first, 40)
    fake.state.forward_delay = 0.05
    fake.state.forward_mode = "ok"
    assert fake.wait_for(lambda: len(fake.state.batches) >= 2)
    first.stop()  # a batch is likely in flight: taken by the upstream, cursor not moved
    taken = len(fake.records())
    assert taken < 40
    second = start_live(cfg)
    push(second, 5, start=40)
    assert fake.wait_for(lambda: outbox_status(second)["depth"] == 0)
    check_delivery(fake, stored_keys(cfg))
    assert len(stored_keys(cfg)) == 45


def test_images_are_forwarded_when_configured(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    live = start_live(forward_config(make_config, fake, images=True))
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0 a tiny jpeg").decode()
    httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="img", rgb_image=jpeg))
    httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="none"))
    assert fake.wait_for(lambda: len(fake.records()) >= 2)
    with_image, without = fake.records()[:2]
    assert base64.b64decode(with_image["image"]) == base64.b64decode(jpeg)
    assert without["image"] is None
    assert with_image["payload"]["data"]["rgb_image"] != jpeg  # the payload stays sanitised


def test_retention_keeps_what_was_not_forwarded(cfg: config.Config) -> None:
    st = store.Store(cfg.storage.database_path, None)
    try:

        async def scenario() -> tuple[int, list[int]]:
            for i in range(6):
                event = normalize(recognition(uuid=f"p-{i}"))
                await st.save(store.Record(event, 1000.0 + i, None, "lobby", ack_body()))
            await st.run(lambda conn: outbox.advance(conn, 3, 3, 2000.0))
            st.prune_limit = outbox.cursor
            removed = await st.prune_events(older_than=5000.0)
            ids = [r[0] for r in st.db.conn.execute("SELECT id FROM events ORDER BY id")]
            return removed, ids

        removed, ids = asyncio.run(scenario())
    finally:
        st.close()
    assert removed == 3 and ids == [4, 5, 6]


def test_retention_always_keeps_the_newest_record(cfg: config.Config) -> None:
    st = store.Store(cfg.storage.database_path, None)
    try:

        async def scenario() -> list[int]:
            for i in range(3):
                event = normalize(recognition(uuid=f"n-{i}"))
                await st.save(store.Record(event, 1000.0 + i, None, "lobby", ack_body()))
            await st.prune_events(older_than=5000.0)
            event = normalize(recognition(uuid="fresh"))
            stored = await st.save(store.Record(event, 6000.0, None, "lobby", ack_body()))
            return [stored.id]

        assert asyncio.run(scenario()) == [4]  # ids never restart below a cursor
    finally:
        st.close()


def test_cli_outbox_reads_the_database_when_the_daemon_is_down(
    tmp_path: Path, fake: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASE_TOML.format(state=tmp_path / "state", serial=SERIAL, serial_old=SERIAL_OLD)
    text += FORWARD.format(url=fake.url, batch=10, images="false")
    path = tmp_path / "edged.toml"
    path.write_text(text)
    cfg = config.load(str(path))
    st = store.Store(cfg.storage.database_path, None)

    event = normalize(recognition(uuid="waiting"))
    asyncio.run(st.save(store.Record(event, time.time() - 60, None, "lobby", ack_body())))
    st.close()
    assert cli.main(["outbox", "-c", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["depth"] == 1 and status["state"] == "daemon not running"
    assert status["age_seconds"] >= 59
    assert cli.main(["outbox", "-c", str(path)]) == 0
    assert "1 records waiting" in capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """``edged run`` in its own process, to be killed with SIGKILL like a power cut."""

    def __init__(self, path: Path, admin: str, receiver: str) -> None:
        self.admin, self.receiver = admin, receiver
        command = [sys.executable, "-m", "edged", "run", "-c", str(path)]
        self.proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{admin}/healthz").status_code == 200:
                    return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("edged did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def test_kill_in_the_middle_loses_and_reorders_nothing(tmp_path: Path, fake: FakeUpstream) -> None:
    text = BASE_TOML.format(state=tmp_path / "state", serial=SERIAL, serial_old=SERIAL_OLD)
    recv_port, admin_port = free_port(), free_port()
    text = text.replace('listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{recv_port}"]', 1)
    text = text.replace('listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{admin_port}"]', 1)
    text += FORWARD.format(url=fake.url, batch=5, images="false")
    path = tmp_path / "edged.toml"
    path.write_text(text)
    cfg = config.load(str(path))
    admin, receiver = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{recv_port}"
    fake.state.forward_mode = "http500"
    first = Process(path, admin, receiver)
    try:
        with httpx.Client() as client:
            for i in range(40):
                body = recognition(uuid=f"k-{i}")
                assert client.post(f"{receiver}/eventRcv", json=body).status_code == 200
        fake.state.forward_delay = 0.05
        fake.state.forward_mode = "ok"
        assert fake.wait_for(lambda: len(fake.state.batches) >= 2)
    finally:
        first.kill()
    assert len(fake.records()) < 40
    second = Process(path, admin, receiver)
    try:
        assert fake.wait_for(lambda: httpx.get(f"{admin}/api/v1/outbox").json()["depth"] == 0)
    finally:
        second.kill()
    check_delivery(fake, stored_keys(cfg))
    assert len(stored_keys(cfg)) == 40


def test_cancellation_goes_through_the_retries(
    make_config: Callable[..., config.Config], fake: FakeUpstream
) -> None:
    cfg = forward_config(make_config, fake)
    fake.state.forward_mode = "http500"
    st = store.Store(cfg.storage.database_path, None)

    async def scenario() -> float:
        forwarder = outbox.Forwarder(cfg, st, httpx.AsyncClient())
        batch = outbox.Batch(b'{"records":[]}', 1, 1, 1)
        task = asyncio.create_task(forwarder.send(batch))
        await until(lambda: forwarder.down and forwarder.attempts >= 2)  # backing off
        start = time.perf_counter()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 2.0)
        await forwarder.aclose()
        return time.perf_counter() - start

    try:
        assert asyncio.run(scenario()) < 0.5
    finally:
        st.close()


def test_batches_are_cut_at_forward_max_bytes(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    text = FORWARD.format(url=fake.url, batch=50, images="true") + "forward_max_bytes = 4000\n"
    fake.state.forward_mode = "http500"  # let the three records gather in the outbox first
    live = start_live(make_config(text))
    jpeg = base64.b64encode(b"\xff\xd8" + bytes(1500)).decode()
    for i in range(3):
        httpx.post(f"{live.url}/eventRcv", json=recognition(uuid=f"big-{i}", rgb_image=jpeg))
    fake.state.forward_mode = "ok"
    assert fake.wait_for(lambda: outbox_status(live)["depth"] == 0)
    assert [len(batch) for batch in fake.state.batches] == [1, 1, 1]
    assert all(base64.b64decode(r["image"]) == base64.b64decode(jpeg) for r in fake.records())
