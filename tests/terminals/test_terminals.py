"""The terminal client: pinned TLS that cannot be bypassed, login, renewal, trust records."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path

import pytest

from edged.config import TerminalConfig
from edged.errors import TerminalAuthError, TerminalError, TerminalUntrusted
from edged.sim.terminal import SimulatedTerminal
from edged.store import events as store
from edged.terminals import client as terminals
from edged.terminals import tlspin
from tests.simfix import managed_config

pytestmark = pytest.mark.anyio
OTHER = "sha256:" + "ab" * 32


def terminal_for(sim: SimulatedTerminal, **kw: object) -> TerminalConfig:
    base: dict[str, object] = {
        "name": "lobby",
        "serial": sim.settings.serial,
        "host": "127.0.0.1",
        "port": sim.port,
    }
    return TerminalConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_fingerprint_forms() -> None:
    hexes = "AB:" * 31 + "AB"
    assert tlspin.normalise(hexes) == OTHER
    assert tlspin.normalise(OTHER.upper()) == OTHER
    assert tlspin.normalise("sha256:1234") is None
    assert tlspin.check_fingerprint("md5:00") is not None and tlspin.check_fingerprint("") is None


async def test_pinned_client_talks_to_the_pinned_terminal(sim: SimulatedTerminal) -> None:
    async with terminals.TerminalClient(terminal_for(sim), "admin-pass", sim.fingerprint) as c:
        assert await c.ping()
        assert (await c.device_info())["device_sn"] == sim.settings.serial
        await c.open_door(2)
    assert sim.door_log == [2]


async def test_other_certificate_is_refused_before_any_request(sim: SimulatedTerminal) -> None:
    async with terminals.TerminalClient(terminal_for(sim), "admin-pass", OTHER) as c:
        with pytest.raises(TerminalUntrusted, match=sim.fingerprint):
            await c.device_info()
        with pytest.raises(TerminalUntrusted):
            await c.ping()
    assert sum(sim.requests.values()) == 0  # not even the login reached the terminal


async def test_blocking_sockets_are_pinned_too(sim: SimulatedTerminal) -> None:
    def handshake(pin: str) -> str:
        ctx = tlspin.pinned_context(pin)
        with (
            socket.create_connection(("127.0.0.1", sim.port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.version() or ""

    assert (await asyncio.to_thread(handshake, sim.fingerprint)).startswith("TLS")
    with pytest.raises(tlspin.PinMismatch):
        await asyncio.to_thread(handshake, OTHER)


async def test_no_trusted_certificate_means_no_client(sim: SimulatedTerminal) -> None:
    with pytest.raises(TerminalUntrusted, match="edged terminals trust lobby"):
        terminals.TerminalClient(terminal_for(sim), "admin-pass", None)


async def test_ca_mode_refuses_a_self_signed_terminal(sim: SimulatedTerminal) -> None:
    term = terminal_for(sim, tls_mode="ca")
    async with terminals.TerminalClient(term, "admin-pass", None) as c:
        assert c.context is not None and c.context.verify_mode == ssl.CERT_REQUIRED
        with pytest.raises(TerminalError):
            await c.device_info()
    assert sum(sim.requests.values()) == 0


async def test_token_renewed_before_expiry(sim: SimulatedTerminal) -> None:
    now = [1000.0]
    term = terminal_for(sim)
    async with terminals.TerminalClient(
        term, "admin-pass", sim.fingerprint, token_minutes=5, clock=lambda: now[0]
    ) as c:
        await c.device_info()
        now[0] += 200  # 100 s before expiry: still good
        await c.device_info()
        assert c.logins == 1
        now[0] += 50  # within the last minute: renewed before the terminal would refuse it
        await c.device_info()
        assert c.logins == 2
    assert sim.requests["POST /v1/auth/login"] == 2


async def test_basic_and_wrong_password(sim: SimulatedTerminal) -> None:
    async with terminals.TerminalClient(
        terminal_for(sim, auth="basic"), "admin-pass", sim.fingerprint
    ) as c:
        assert (await c.functions())["record"] is True
    assert sim.requests["POST /v1/auth/login"] == 0
    async with terminals.TerminalClient(terminal_for(sim), "wrong", sim.fingerprint) as c:
        with pytest.raises(TerminalAuthError, match="wrong password"):
            await c.device_info()


def test_password_file_and_inline_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert terminals.password(TerminalConfig(name="a", password_file=str(secret))) == "s3cret"
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert terminals.password(TerminalConfig(name="a", password="inline")) == "inline"
    assert "password_file" in caplog.text and "inline" not in caplog.text.split("prefer")[1]


async def test_trust_record_and_config_precedence(sim: SimulatedTerminal, tmp_path: Path) -> None:
    cfg = managed_config(tmp_path / "state", sim, tls_fingerprint=None)
    db = store.open_database(cfg.storage.database_path)
    try:
        term = cfg.terminals[0]
        assert terminals.pin_for(db.conn, term) is None
        presented = await tlspin.fetch_certificate("127.0.0.1", sim.port)
        assert presented.fingerprint == sim.fingerprint and "SenseNebula" in presented.subject
        terminals.record_pin(db.conn, term, presented)
        assert terminals.pin_for(db.conn, term) == sim.fingerprint
        pinned = TerminalConfig(name=term.name, serial=term.serial, tls_fingerprint=OTHER.upper())
        assert terminals.pin_for(db.conn, pinned) == OTHER  # the configuration wins
    finally:
        db.conn.close()
    assert sum(sim.requests.values()) == 0  # looking at the certificate sends nothing


def test_status_section_lines() -> None:
    lines = terminals.status_section(
        [
            {
                "name": "lobby",
                "serial": "S1",
                "state": "untrusted",
                "auth_mode": 1,
                "last_push": None,
                "last_heartbeat": None,
                "last_error": "presented X",
            },
            {"name": "gate", "serial": "S2", "last_push": "2026-11-28T08:00:00Z"},
        ]
    )
    assert lines[0] == "terminals"
    assert "untrusted" in lines[1] and "error: presented X" in lines[1]
    assert "seen" in lines[2] and "2026-11-28T08:00:00Z" in lines[2]


def test_firmware_version_and_first_page() -> None:
    assert terminals.firmware_version({"sw_ver": "V1.2.1"}) == (1, 2, 1)
    assert terminals.firmware_version({"sw_ver": "", "api_ver": "1.0"}) == (1, 0)
    assert terminals.firmware_version({"sw_ver": None}) is None
    assert terminals.records_page((1, 0)) == 25
    assert terminals.records_page((1, 3, 0)) == terminals.records_page(None) == 200


def test_limit_from_a_refusal() -> None:
    assert terminals.limit_from_error("code 400: limit must be 1..25", 200) == 25
    assert terminals.limit_from_error("code 400: limit too large", 200) == 100
    assert terminals.limit_from_error("code 400: limit must be 1..25", 25) is None
    assert terminals.limit_from_error("code 500: storage failure", 200) is None


async def test_subscribe_without_enabled_where_it_is_refused(sim: SimulatedTerminal) -> None:
    # the firmware is not known yet (no device info read): a refusal naming 'enabled' is
    # retried without it, and remembered
    async with terminals.TerminalClient(terminal_for(sim), "admin-pass", sim.fingerprint) as c:
        await c.subscribe("http://127.0.0.1:9/e")
        assert sim.registered
        assert c.takes_enabled is sim.firmware.enabled_accepted
    refused = 0 if sim.firmware.enabled_accepted else 1
    assert sim.requests["POST /v1/event/subscribe"] == 1 + refused
