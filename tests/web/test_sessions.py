"""Sessions, CSRF and the login rate limit, on a fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.requests import Request

from edged.config import Config
from edged.web import accounts
from edged.web.sessions import COOKIE, Sessions, TooManyAttempts, cookie_header
from tests.timefix import FakeClock
from tests.web.helpers import NAME, PASSWORD, web_config

pytestmark = pytest.mark.anyio


def request(method: str = "GET", cookie: str = "", csrf: str = "") -> Request:
    headers = []
    if cookie:
        headers.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    if csrf:
        headers.append((b"x-csrf-token", csrf.encode()))
    return Request({"type": "http", "method": method, "headers": headers, "path": "/"})


@pytest.fixture
def cfg(make_config: Callable[..., Config]) -> Config:
    return web_config(make_config)


async def test_a_session_reads_and_writes_with_its_token(cfg: Config) -> None:
    sessions = Sessions(cfg, FakeClock())
    session = await sessions.login(NAME, PASSWORD, "10.0.0.1")
    assert session is not None
    assert sessions.who(request("GET", session.id)) == f"web:{NAME}"
    assert sessions.who(request("POST", session.id)) is None  # no CSRF token
    assert sessions.who(request("POST", session.id, "wrong")) is None
    assert sessions.who(request("POST", session.id, session.csrf)) == f"web:{NAME}"
    assert sessions.who(request("POST", "forged", session.csrf)) is None
    assert sessions.logout(request("POST", session.id)) == NAME
    assert sessions.who(request("GET", session.id)) is None


async def test_sessions_expire_unused_and_are_renewed_by_use(cfg: Config) -> None:
    clock = FakeClock()
    sessions = Sessions(cfg, clock)
    session = await sessions.login(NAME, PASSWORD, "10.0.0.1")
    assert session is not None
    lifetime = cfg.web.session_minutes * 60
    clock.advance(lifetime - 1)
    assert sessions.get(request(cookie=session.id)) is not None  # renewed
    clock.advance(lifetime - 1)
    assert sessions.get(request(cookie=session.id)) is not None
    clock.advance(lifetime + 1)
    assert sessions.get(request(cookie=session.id)) is None


async def test_a_changed_password_ends_the_session(cfg: Config) -> None:
    sessions = Sessions(cfg, FakeClock())
    session = await sessions.login(NAME, PASSWORD, "10.0.0.1")
    assert session is not None
    accounts.set_password(cfg.web.accounts_path(cfg.storage.state_dir), NAME, "another-pass")
    assert sessions.get(request(cookie=session.id)) is None


async def test_failed_logins_are_limited_per_address_and_name(cfg: Config) -> None:
    clock = FakeClock()
    sessions = Sessions(cfg, clock)
    for _ in range(cfg.web.login_attempts):
        assert await sessions.login(NAME, "wrong-password", "10.0.0.9") is None
    with pytest.raises(TooManyAttempts):  # even the right password: not checked now
        await sessions.login(NAME, PASSWORD, "10.0.0.9")
    with pytest.raises(TooManyAttempts):  # the name is limited from another address too
        await sessions.login(NAME, PASSWORD, "10.0.0.10")
    clock.advance(61)
    assert await sessions.login(NAME, PASSWORD, "10.0.0.9") is not None


def test_cookie_attributes() -> None:
    plain = cookie_header("abc", secure=False)
    assert plain == f"{COOKIE}=abc; Path=/; HttpOnly; SameSite=Strict"
    assert cookie_header("abc", secure=True).endswith("; Secure")
    assert "Max-Age=0" in cookie_header("", secure=False, max_age=0)
