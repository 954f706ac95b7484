"""The simulator itself: its API, pushes with replay in order, reboots, several at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edged.sim import api as simapi
from edged.sim.terminal import SimSettings, SimulatedTerminal
from edged.terminals import tlspin
from tests.simfix import make_sim
from tests.timefix import FakeClock, until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sim(tmp_path: Path, fake_clock: FakeClock) -> AsyncIterator[SimulatedTerminal]:
    terminal = make_sim(tmp_path, clock=fake_clock)  # its tokens last until time is advanced
    await terminal.start()
    yield terminal
    await terminal.stop()


def client(sim: SimulatedTerminal) -> httpx.AsyncClient:
    ctx = tlspin.pinned_context(sim.fingerprint)
    return httpx.AsyncClient(base_url=sim.url, verify=ctx, timeout=5.0)


async def login(c: httpx.AsyncClient, password: str = "admin-pass", **kw: Any) -> dict[str, Any]:
    body = {"username": "admin", "password": password, **kw}
    return dict((await c.post("/v1/auth/login", json=body)).json())


async def test_login_errors_tokens_expire_and_basic(tmp_path: Path, fake_clock: FakeClock) -> None:
    sim = make_sim(tmp_path, clock=fake_clock)  # a token "minute" of 60 s of the fake clock
    await sim.start()
    try:
        await _login_expiry_and_basic(sim, fake_clock)
    finally:
        await sim.stop()


async def _login_expiry_and_basic(sim: SimulatedTerminal, clock: FakeClock) -> None:
    async with client(sim) as c:
        assert (await login(c, username="nobody"))["code"] == 1000
        assert (await login(c, "wrong"))["code"] == 1001
        token = (await login(c, validTime=1))["data"]["token"]
        bearer = {"authorization": f"Bearer {token}"}
        assert (await c.get("/v1/device/info", headers=bearer)).json()["code"] == 200
        clock.advance(59.9)
        assert (await c.get("/v1/device/info", headers=bearer)).status_code == 200
        clock.advance(0.1)  # validTime=1: one minute
        expired = await c.get("/v1/device/info", headers=bearer)
        assert expired.status_code == 401 and expired.json()["code"] == 401
        basic = await c.get("/v1/device/info", auth=("admin", "admin-pass"))
        assert basic.json()["data"]["device_sn"] == sim.settings.serial
        assert (await c.get("/v1/device/info")).status_code == 401
        assert (await c.get("/v2/datasync/ping")).json() == {
            "code": 200,
            "msg": "success",
            "data": None,
        }


async def test_functions_need_the_whole_object(sim: SimulatedTerminal) -> None:
    async with client(sim) as c:
        auth = ("admin", "admin-pass")
        partial = await c.post("/v1/device/functions", json={"auth_mode": 1}, auth=auth)
        assert partial.json()["code"] == 400 and "record" in partial.json()["msg"]
        whole = (await c.get("/v1/device/functions", auth=auth)).json()["data"]
        whole["auth_mode"] = 1
        assert (await c.post("/v1/device/functions", json=whole, auth=auth)).json()["code"] == 200
        assert sim.state.functions["auth_mode"] == 1


class PushCatcher:
    """A receiver on loopback keeping each push's headers and body."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def post(self, request: Request) -> Response:
        self.got.append((dict(request.headers), json.loads(await request.body())))
        return Response(b'{"code": 200, "msg": "success"}', media_type="application/json")


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[int]:
    """``app`` served by hypercorn on a loopback port (yielded) until the block ends."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config as HyperConfig

    from edged.ops.daemon import bind

    sock = bind("127.0.0.1:0")
    hc = HyperConfig()
    hc.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn owns (and closes) its copy
    hc.accesslog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, hc, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        await server
        sock.close()


async def pushes_of(
    tmp_path: Path, name: str, act: Callable[[SimulatedTerminal], object], count: int
) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """What a simulator of firmware ``name`` pushes (headers, body) after ``act(sim)``."""
    catcher = PushCatcher()
    app = Starlette(routes=[Route("/e", catcher.post, methods=["POST"])])
    async with serving(app) as port:
        sim = make_sim(tmp_path, firmware=name)
        await sim.start()
        try:
            await _firmware_api(sim, simapi.firmware(name), f"http://127.0.0.1:{port}/e")
            act(sim)
            await until(lambda: len(catcher.got) == count)
        finally:
            await sim.stop()
    return catcher.got


@pytest.mark.parametrize("name", list(simapi.FIRMWARES))
async def test_each_firmware_differs_as_documented(tmp_path: Path, name: str) -> None:
    fw = simapi.firmware(name)
    got = await pushes_of(tmp_path, name, lambda sim: sim.emit(1), 1)
    headers, push = got[0]
    assert ("content-type" in headers) is fw.push_content_type  # 1.0 sends none
    assert ("sn" in headers) is fw.identity_headers
    data = push["data"]
    assert ("uuid" in data, "recognitionType" in data) == (fw.new_records, fw.new_records)
    assert ("recognizeStatus" in data) is not fw.new_records
    assert data["mode"] == (2 if name == "1.0" else 3)  # face or card or QR: swapped after 1.0


async def _firmware_api(sim: SimulatedTerminal, fw: simapi.Firmware, dest: str) -> None:
    auth = ("admin", "admin-pass")
    async with client(sim) as c:
        ping = await c.get("/v2/datasync/ping")
        assert ping.status_code == (200 if fw.v2 else 404)
        assert ("sn" in ping.headers) is fw.identity_headers
        info = (await c.get("/v1/device/info", auth=auth)).json()["data"]
        assert info["sw_ver"] == fw.version
        with_enabled = await c.post(
            "/v1/event/subscribe", json={"event_dest": dest, "enabled": True}, auth=auth
        )
        assert (with_enabled.json()["code"] == 200) is fw.enabled_accepted
        if not fw.enabled_accepted:
            assert "enabled" in with_enabled.json()["msg"] and not sim.registered
            await c.post("/v1/event/subscribe", json={"event_dest": dest}, auth=auth)
        assert sim.registered
        read = (await c.get("/v1/event/subscribe", auth=auth)).json()["data"]
        expected = {
            "null": None,
            "dest": {"event_dest": dest},
            "full": {"event_dest": dest, "enabled": True},
        }
        assert read == expected[fw.read_back]
        most = fw.records_limit
        over = await c.post("/v1/event/records", json={"limit": most + 1}, auth=auth)
        assert over.json()["code"] == 400 and over.json()["msg"] == f"limit must be 1..{most}"
        within = await c.post("/v1/event/records", json={"limit": most}, auth=auth)
        assert within.json()["code"] == 200


def test_firmware_names_and_aliases() -> None:
    assert simapi.firmware("new") is simapi.firmware("1.3.0")
    assert simapi.firmware("old") is simapi.firmware("1.1")
    with pytest.raises(ValueError, match=r"1\.2\.1"):
        simapi.firmware("2.0")


async def test_records_are_paged(sim: SimulatedTerminal) -> None:
    sim.emit(250)
    async with client(sim) as c:
        auth = ("admin", "admin-pass")
        too_many = await c.post("/v1/event/records", json={"limit": 201}, auth=auth)
        assert too_many.json()["code"] == 400
        page = (
            await c.post("/v1/event/records", json={"offset": 200, "limit": 200}, auth=auth)
        ).json()["data"]
    assert (page["total"], page["count"], len(page["items"])) == (250, 50, 50)
    assert page["items"][0]["uuid"] == sim.history[200]["uuid"]


class FlakyReceiver:
    """A receiver on loopback that refuses the first ``failures`` pushes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[str] = []

    async def post(self, request: Request) -> Response:
        body = json.loads(await request.body())
        if self.failures > 0:
            self.failures -= 1
            return Response(b'{"code": 500}', status_code=200)  # HTTP 200, code 500: not taken
        self.got.append(body["data"]["uuid"])
        return Response(b'{"code": 200, "msg": "success"}', media_type="application/json")


async def test_unacknowledged_records_are_replayed_in_order(tmp_path: Path) -> None:
    receiver = FlakyReceiver(failures=3)
    app = Starlette(routes=[Route("/e", receiver.post, methods=["POST"])])
    async with serving(app) as port:
        sim = make_sim(tmp_path, event_dest=f"http://127.0.0.1:{port}/e", retry_seconds=0.02)
        await sim.start()
        try:
            made = sim.emit(5)
            await until(lambda: len(receiver.got) == 5)
            assert receiver.got == [r["uuid"] for r in made]
            await until(lambda: not sim.buffer and sim.pushed == 5)  # the fifth answer read
        finally:
            await sim.stop()


async def test_buffer_cap_drops_oldest(tmp_path: Path) -> None:
    sim = make_sim(tmp_path, event_dest="http://127.0.0.1:9/e", buffer_cap=10)
    sim.emit(15)  # not started: nothing is sent
    assert len(sim.buffer) == 10 and sim.dropped == 5
    assert sim.buffer[0]["uuid"] == sim.history[5]["uuid"]


async def test_reboot_loses_registration_and_several_run_at_once(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    sims = [
        make_sim(tmp_path, serial=f"SIM000{i}", clock=fake_clock, event_dest="http://x:1/e")
        for i in range(2)
    ]
    for s in sims:
        await s.start()
    try:
        assert sims[0].port != sims[1].port
        fingerprint = sims[0].fingerprint
        sims[0].state.functions["auth_mode"] = 1
        reboot = asyncio.create_task(sims[0].reboot(0.3))
        back = fake_clock.monotonic() + 0.3
        await until(lambda: fake_clock.next_due() == back)  # down, waiting out its 0.3 s
        assert not sims[0].up
        with pytest.raises(OSError):  # away until the clock moves on
            await asyncio.open_connection("127.0.0.1", sims[0].port)
        fake_clock.advance(0.3)
        await reboot
        assert sims[0].boots == 2 and sims[0].state.subscription is None
        assert sims[0].state.functions["auth_mode"] == 0
        assert sims[0].fingerprint == fingerprint
        assert sims[1].registered  # the other one is untouched
    finally:
        for s in sims:
            await s.stop()


async def test_remote_auth_fallback_to_local(tmp_path: Path, fake_clock: FakeClock) -> None:
    sim = SimulatedTerminal(SimSettings(cert_dir=str(tmp_path), heartbeat_seconds=30), fake_clock)
    sim.state.functions.update(
        auth_mode=1,
        remote_authentication_address="http://127.0.0.1:9/a",
        remote_auth_timeout_to_local_auth=1,
    )
    await sim.start()
    try:
        # nothing answers on port 9: each heartbeat finds the server lost
        for _ in range(2):  # the first lost heartbeat, then one a minute later
            await until(lambda: fake_clock.pending > 0)  # the heartbeat waits on the clock
            assert sim.state.functions["auth_mode"] == 1
            fake_clock.advance(60)
            await until(lambda: sim._auth_lost_since is not None)
        await until(lambda: sim.state.functions["auth_mode"] == 0)
    finally:
        await sim.stop()


@pytest.mark.parametrize("name", list(simapi.FIRMWARES))
async def test_alarms_and_blacklisted_records_as_each_firmware_pushes_them(
    tmp_path: Path, name: str
) -> None:
    fw = simapi.firmware(name)

    def act(sim: SimulatedTerminal) -> None:
        sim.emit(1, blacklisted=True)
        if fw.alarms:
            sim.alarm(10002, 1)
        else:
            with pytest.raises(ValueError, match="pushes no alarms"):
                sim.alarm()

    got = await pushes_of(tmp_path, name, act, 2 if fw.alarms else 1)
    pushes = [push for _, push in got]
    record = pushes[0]
    assert record["type"] == 0 and record["data"]["pass"] is False
    assert record["data"]["user"]["type"] == fw.blacklist_type  # 3 before 1.3.0, then 5
    assert record["data"].get("recognitionType") == (5 if fw.new_records else None)
    if fw.alarms:
        alarm = pushes[1]
        assert alarm["type"] == 1 and "deviceSN" not in alarm["data"]
        assert alarm["data"]["code"] == 10002 and alarm["data"]["event_time"] > 10**12  # ms


async def test_an_alarm_without_a_serial_is_stored_for_the_terminal_that_sent_it(
    tmp_path: Path, start_live: Any
) -> None:
    import sqlite3

    from tests.simfix import free_port, managed_config

    sim = make_sim(tmp_path, firmware="1.3.0")
    await sim.start()
    try:
        state = tmp_path / "state"
        state.mkdir()
        cfg = managed_config(state, sim, gateway_port=free_port())
        start_live(cfg)
        await until(lambda: sim.registered, 20)
        sim.emit(1, blacklisted=True)
        sim.alarm(10001, 1)

        def stored() -> list[tuple[str, str]]:
            with contextlib.closing(sqlite3.connect(cfg.storage.database_path)) as conn:
                return sorted(conn.execute("SELECT kind, serial FROM events").fetchall())

        await until(lambda: len(stored()) == 2, 20)
    finally:
        await sim.stop()
    assert stored() == [("alarm", sim.settings.serial), ("recognition", sim.settings.serial)]
