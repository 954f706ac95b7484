"""The terminals' commands and the daemon managing a simulated terminal end to end."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edged import config
from edged.cli import main as cli
from edged.sim.terminal import SimulatedTerminal
from edged.terminals import discovery
from tests.conftest import LiveDaemon
from tests.simfix import free_port, managed_config, until

pytestmark = pytest.mark.anyio


def write_config(tmp_path: Path, cfg: config.Config) -> str:
    path = tmp_path / "edged.toml"
    path.write_text(config.to_toml(config.to_dict(cfg, mask=False)))
    return str(path)


async def test_trust_records_the_presented_certificate(
    sim: SimulatedTerminal, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = managed_config(tmp_path / "state", sim, tls_fingerprint=None)
    path = write_config(tmp_path, cfg)
    code = await asyncio.to_thread(cli.main, ["terminals", "trust", "lobby", "--yes", "-c", path])
    out = capsys.readouterr().out
    assert code == 0 and sim.fingerprint in out and "CN=SenseNebula-S7" in out
    conn = sqlite3.connect(cfg.storage.database_path)
    stored = conn.execute("SELECT serial, fingerprint FROM terminal_trust").fetchall()
    conn.close()
    assert stored == [(sim.settings.serial, sim.fingerprint)]
    assert await asyncio.to_thread(cli.main, ["terminals", "trust", "nope", "-c", path]) == 78


async def test_daemon_registers_receives_reports_and_resubscribes(
    sim: SimulatedTerminal,
    tmp_path: Path,
    start_live: Callable[[config.Config], LiveDaemon],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = managed_config(tmp_path / "state", sim, gateway_port=free_port(), admin_port=free_port())
    path = write_config(tmp_path, cfg)
    live = await asyncio.to_thread(start_live, cfg)
    await until(lambda: sim.registered)
    sim.emit(3)
    fresh = httpx.Limits(max_keepalive_connections=0)  # hypercorn 0.13 may drop an idle one
    async with httpx.AsyncClient(base_url=live.admin_url, limits=fresh) as admin:

        async def events() -> int:
            return len((await admin.get("/api/v1/events")).json()["events"])

        for _ in range(200):
            if await events() == 3:
                break
            await asyncio.sleep(0.02)
        assert await events() == 3
        listing = (await admin.get("/api/v1/terminals")).json()["terminals"]
        assert listing[0]["state"] == "registered" and listing[0]["last_push"]
        assert listing[0]["managed"] is True and listing[0]["auth_mode"] == 0
        ready = (await admin.get("/readyz")).json()
        assert ready["ready"] is True and ready["checks"]["terminals"]["ok"] is True
    before = sim.requests["POST /v1/event/subscribe"]
    sim.state.subscription = None
    code = await asyncio.to_thread(cli.main, ["terminals", "resubscribe", "lobby", "-c", path])
    assert code == 0
    await until(lambda: sim.registered)
    assert sim.requests["POST /v1/event/subscribe"] == before + 1
    assert await asyncio.to_thread(cli.main, ["status", "-c", path]) == 0
    out = capsys.readouterr().out
    assert ": ready" in out and "registered" in out


async def test_simulate_runs_several_for_a_while(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "simulate",
        "--count",
        "2",
        "--port",
        "0",
        "--for",
        "0.2",
        "--rate",
        "0",
        "--serial",
        "SIM0009",
        "--cert-dir",
        str(tmp_path / "c"),
    ]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert await asyncio.to_thread(cli.main, argv) == 0
    finally:  # the command sets up logging on this test's stderr: put the test's back
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["SIM0009", "SIM0010"]
    assert all("https://127.0.0.1:" in line and "sha256:" in line for line in lines)


def test_discovery_txt_parsing() -> None:
    found = discovery.from_properties(
        {b"sn": b"PS71HD01MC22C00014\x00", b"model": b"S7 \x00"}, ["192.0.2.7"], 8000
    )
    assert found == discovery.Found("PS71HD01MC22C00014", "S7", "192.0.2.7:8000")
    assert discovery.txt_value(None) == ""


def test_discover_without_zeroconf_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf raises ImportError
    path = tmp_path / "e.toml"
    path.write_text("")
    assert cli.main(["terminals", "discover", "-c", str(path)]) == 1
    assert "python3-zeroconf" in capsys.readouterr().err


@pytest.mark.parametrize("firmware", ["1.0", "1.3.0"])
async def test_the_daemon_keeps_the_terminals_people_and_the_commands_show_it(
    firmware: str,
    tmp_path: Path,
    start_live: Callable[[config.Config], LiveDaemon],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import dataclasses
    import json
    import time

    from edged.config.schema import PeopleSyncConfig, TerminalClockConfig
    from tests.simfix import make_sim

    sim = make_sim(tmp_path, firmware=firmware)
    await sim.start()
    try:
        cfg = managed_config(
            tmp_path / "state", sim, gateway_port=free_port(), admin_port=free_port()
        )
        clock = TerminalClockConfig(mode="manual")  # the terminal's zone kept: rules expressible
        cfg = dataclasses.replace(
            cfg, people_sync=PeopleSyncConfig(enabled=True), terminal_clock=clock
        )
        path = write_config(tmp_path, cfg)
        doc = tmp_path / "people.json"
        doc.write_text(
            json.dumps(
                {
                    "people": [
                        {"id": "e-1", "name": "Ann", "user_id": "101", "groups": ["staff"]},
                        {"id": "e-2", "name": "Bob", "user_id": "102", "groups": ["staff"]},
                    ],
                    "permissions": [{"group": "staff", "door": "lobby"}],
                }
            )
        )
        live = await asyncio.to_thread(start_live, cfg)
        await until(lambda: sim.registered, 10)
        await asyncio.to_thread(cli.main, ["people", "import", str(doc), "-c", path])
        committed = time.monotonic()
        await until(lambda: sorted(sim.library.users) == ["101", "102"], 10)
        assert time.monotonic() - committed < 5  # committed by another process, on the terminal
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, ["terminals", "sync", "--check", "-c", path])
        out = capsys.readouterr().out
        assert code == 0 and "lobby: 2 people for the terminal; would write 0" in out
        sim.library.delete_user("102")  # someone deleted a user at the device
        code = await asyncio.to_thread(cli.main, ["terminals", "sync", "--check", "-c", path])
        out = capsys.readouterr().out
        assert code == 1 and "  + user 102 (person e-2)" in out
        code = await asyncio.to_thread(cli.main, ["terminals", "sync", "lobby", "-c", path])
        out = capsys.readouterr().out
        assert code == 0 and "wrote 1 (add 1" in out and "102" in sim.library.users
        await asyncio.to_thread(cli.main, ["terminals", "show", "lobby", "-c", path])
        out = capsys.readouterr().out
        assert "people:    2 of 2 in step, 0 refused" in out
        await asyncio.to_thread(cli.main, ["people", "show", "e-1", "-c", path])
        out = capsys.readouterr().out
        assert f"{sim.settings.serial} user 101: in step" in out
        async with httpx.AsyncClient(base_url=live.admin_url) as admin:
            listed = (await admin.get("/api/v1/terminals")).json()["terminals"]
            scraped = (await admin.get("/metrics")).text
        assert listed[0]["people"]["in_step"] == 2 and listed[0]["people"]["errors"] == 0
        labels = f'{{serial="{sim.settings.serial}",terminal="lobby"}}'
        assert f"edged_terminal_people_in_step{labels} 1.0" in scraped
        drift = listed[0]["clock"]["drift"]
        assert drift is not None and f"edged_terminal_clock_drift_seconds{labels}" in scraped
    finally:
        await sim.stop()
