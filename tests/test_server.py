"""A real daemon: hypercorn on loopback sockets, a real SQLite file, restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import httpx
import pytest

from edged import server
from edged.config import Config
from tests.conftest import LiveDaemon, auth_request, recognition


def test_live_push_and_admin(live: LiveDaemon) -> None:
    response = httpx.post(f"{live.url}/eventRcv", json=recognition())
    assert response.status_code == 200
    events = httpx.get(f"{live.admin_url}/api/v1/events").json()["events"]
    assert [e["kind"] for e in events] == ["recognition"]
    assert httpx.get(f"{live.admin_url}/readyz").json()["ready"] is True


def test_duplicate_after_restart_gets_same_answer(
    cfg: Config, start_live: Callable[[Config], LiveDaemon]
) -> None:
    body = auth_request(user_id="nobody")
    first = start_live(cfg)
    answer = httpx.post(f"{first.url}/auth", json=body).json()
    first.stop()
    second = start_live(cfg)
    again = httpx.post(f"{second.url}/auth", json=body).json()
    assert again == answer
    conn = sqlite3.connect(cfg.storage.database_path)
    rows = conn.execute("SELECT COUNT(*), SUM(duplicates) FROM events").fetchone()
    conn.close()
    assert rows == (1, 1)


def test_bind_error_is_clear(cfg: Config, live: LiveDaemon) -> None:
    taken = f"127.0.0.1:{live.daemon.receiver_port}"
    with pytest.raises(server.BindError, match=r"cannot listen on 127\.0\.0\.1"):
        server.bind(taken)
