"""Helpers for tests against the terminal simulator over real HTTPS on loopback."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from edged import config
from edged.clock import SYSTEM, Clock
from edged.receive.receiver import TerminalSeen
from edged.sim.terminal import SimSettings, SimulatedTerminal
from edged.store import events as store
from edged.terminals.reconciler import TerminalReconciler
from tests.timefix import until

# until is defined in tests/timefix.py; offered here too for the simulator tests
__all__ = ["FAST", "Running", "free_port", "make_sim", "managed_config", "until"]

FAST = {
    "probe_interval": 0.05,
    "interval": 30,
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "heartbeat_timeout": 1,
    "request_timeout": 3,
}


def _reconciler_table(keys: dict[str, Any]) -> str:
    lines = "\n".join(f"{k} = {config._toml_value(v)}" for k, v in keys.items())
    return f"[reconciler]\n{lines}\n"


def free_port() -> int:
    """A loopback port free right now (for a gateway URL needed before the daemon binds)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def managed_config(
    state: Path,
    sim: SimulatedTerminal,
    gateway_port: int = 8090,
    fast: bool = True,
    admin_port: int = 0,
    reconciler: dict[str, Any] | None = None,
    extra: str = "",
    **keys: Any,
) -> config.Config:
    """A config managing one terminal (``lobby``) served by ``sim``.

    ``fast`` shortens the reconciler's intervals (FAST); ``reconciler`` overrides single keys;
    ``extra`` is TOML text added before the terminal (``[site]`` is not in the rest).
    """
    terminal = {
        "name": "lobby",
        "serial": sim.settings.serial,
        "host": "127.0.0.1",
        "port": sim.port,
        "password": sim.settings.password,
        "tls_fingerprint": sim.fingerprint,
        **keys,
    }
    terminal = {k: v for k, v in terminal.items() if v is not None}
    lines = "\n".join(f"{k} = {config._toml_value(v)}" for k, v in terminal.items())
    tuned = {**(FAST if fast else {}), **(reconciler or {})}
    text = f"""
[receiver]
listen = ["127.0.0.1:{gateway_port}"]
allowed_networks = ["127.0.0.0/8"]

[admin]
listen = ["127.0.0.1:{admin_port}"]
token = "test-token"

[storage]
state_dir = "{state}"

[gateway]
public_url = "http://127.0.0.1:{gateway_port}"
{_reconciler_table(tuned) if tuned else ""}
{extra}
[[terminals]]
{lines}
"""
    return config.parse(text, "test.toml")


def make_sim(
    tmp_path: Path, serial: str = "PS71HD01MC22C00014", clock: Clock = SYSTEM, **settings: Any
) -> SimulatedTerminal:
    """A simulator keeping its certificate under tmp_path, on ``clock`` (a FakeClock in tests
    that time its tokens, reboots or heartbeats)."""
    return SimulatedTerminal(
        SimSettings(serial=serial, cert_dir=str(tmp_path / "certs"), **settings), clock
    )


class Running:
    """A reconciler task with its store; stopped (and checked) at the end."""

    def __init__(self, cfg: Any, seen: dict[str, TerminalSeen] | None = None, **kw: Any) -> None:
        self.store = store.Store(cfg.storage.database_path)
        self.rec = TerminalReconciler(cfg, cfg.terminals[0], self.store, seen or {}, **kw)
        self.task = asyncio.create_task(self.rec.run())

    async def stop(self) -> None:
        self.rec.stop()
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        assert self.rec.client is None or self.rec.client.http.is_closed
        self.store.close()
