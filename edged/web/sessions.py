"""Logins and sessions of the web page: cookies, CSRF tokens, the login rate limit.

A login that matches an account (edged/web/accounts.py) opens a session: a random 256-bit id in
the ``edged_session`` cookie (HttpOnly, SameSite=Strict, Path=/, Secure when the page came over
TLS or through a proxy saying ``X-Forwarded-Proto: https``) and a CSRF token of its own, which
every write must echo in the ``X-CSRF-Token`` header or the ``csrf`` form field. Sessions live
in memory: a restart logs everyone out. A session ends after ``web.session_minutes`` without
use, at logout, or when its account is removed or its password changed.

Failed logins are counted per client address and per account name over a sliding minute;
past ``web.login_attempts`` the login is refused with 429 before any password is checked.

The admin API accepts a session as it accepts the bearer token (:meth:`Sessions.who` is what
edged/admin/app.py's ``Admin`` is given): reads with the cookie, writes with cookie and token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field

from starlette.requests import Request

from edged.clock import SYSTEM, Clock
from edged.config import Config
from edged.web.accounts import Accounts

log = logging.getLogger(__name__)

COOKIE = "edged_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WINDOW = 60.0  # seconds over which failed logins are counted
MAX_TRACKED = 10_000  # addresses and names whose failures are remembered at once


@dataclass
class Session:
    """One logged-in browser."""

    id: str
    user: str
    csrf: str
    hash: str  # the account's password hash at login: a changed password ends the session
    created: float
    last_used: float


@dataclass
class Limiter:
    """Failed attempts per key over a sliding window."""

    allowed: int
    clock: Clock = SYSTEM
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, key: str) -> bool:
        times = self.failures.get(key)
        if not times:
            return False
        now = self.clock.monotonic()
        while times and now - times[0] > WINDOW:
            times.popleft()
        if not times:
            del self.failures[key]
            return False
        return len(times) >= self.allowed

    def failed(self, key: str) -> None:
        if len(self.failures) >= MAX_TRACKED and key not in self.failures:
            self.failures.pop(next(iter(self.failures)))  # forget the oldest key
        self.failures.setdefault(key, deque()).append(self.clock.monotonic())

    def forget(self, key: str) -> None:
        self.failures.pop(key, None)


class TooManyAttempts(Exception):
    """The login is refused without checking: too many failures this minute."""


class Sessions:
    """The open sessions and the accounts they log in with."""

    def __init__(self, cfg: Config, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self.accounts = Accounts(cfg.web.accounts_path(cfg.storage.state_dir))
        self.lifetime = cfg.web.session_minutes * 60.0
        self.limiter = Limiter(cfg.web.login_attempts, clock)
        self._open: dict[str, Session] = {}

    def reconfigure(self, cfg: Config) -> None:
        """Take a reloaded configuration's lifetime and attempt limit (the file needs a restart)."""
        self.lifetime = cfg.web.session_minutes * 60.0
        self.limiter.allowed = cfg.web.login_attempts

    async def login(self, name: str, password: str, address: str) -> Session | None:
        """A new session when the name and password match; None when not.

        TooManyAttempts when the address or the name failed too often this minute.
        """
        keys = (f"addr:{address}", f"name:{name[:64]}")
        if any(self.limiter.blocked(k) for k in keys):
            log.debug("web: login of %r from %s refused: too many attempts", name[:64], address)
            raise TooManyAttempts
        ok = await asyncio.to_thread(self.accounts.check, name, password)
        if not ok:
            for key in keys:
                self.limiter.failed(key)
            log.info("web: failed login as %r from %s", name[:64], address)
            return None
        for key in keys:
            self.limiter.forget(key)
        now = self.clock.time()
        session = Session(
            id=secrets.token_urlsafe(32),
            user=name,
            csrf=secrets.token_urlsafe(32),
            hash=self.accounts.current()[name]["hash"],
            created=now,
            last_used=now,
        )
        self._prune(now)
        self._open[session.id] = session
        log.info("web: %s logged in from %s", name, address)
        return session

    def get(self, request: Request) -> Session | None:
        """The request's live session (renewed), or None."""
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        session = self._open.get(sid)
        if session is None:
            return None
        now = self.clock.time()
        account = self.accounts.current().get(session.user)
        if (
            now - session.last_used > self.lifetime
            or account is None
            or (account["hash"] != session.hash)
        ):
            del self._open[sid]
            return None
        session.last_used = now
        return session

    def csrf_ok(self, request: Request, session: Session, form_value: str | None = None) -> bool:
        """Whether a write carries the session's CSRF token (header or form field)."""
        given = request.headers.get(CSRF_HEADER) or form_value or ""
        return hmac.compare_digest(given.encode(), session.csrf.encode())

    def who(self, request: Request) -> str | None:
        """For the admin API: ``web:NAME`` when the request may act with a session, else None.

        A read needs the session's cookie; a write the cookie and the CSRF header.
        """
        session = self.get(request)
        if session is None:
            return None
        if request.method not in SAFE_METHODS and not self.csrf_ok(request, session):
            return None
        return f"web:{session.user}"

    def logout(self, request: Request) -> str | None:
        """End the request's session; the user it was (None: there was none)."""
        session = self._open.pop(request.cookies.get(COOKIE, ""), None)
        if session is not None:
            log.info("web: %s logged out", session.user)
        return session.user if session else None

    def open_count(self) -> int:
        """Sessions open now."""
        self._prune(self.clock.time())
        return len(self._open)

    def _prune(self, now: float) -> None:
        for sid in [s for s, x in self._open.items() if now - x.last_used > self.lifetime]:
            del self._open[sid]


def over_tls(request: Request) -> bool:
    """Whether the browser reached edged over TLS (directly, or through a TLS proxy)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def cookie_header(session_id: str, secure: bool, max_age: int | None = None) -> str:
    """The ``Set-Cookie`` value of a session (empty id and max_age 0: delete it)."""
    parts = [f"{COOKIE}={session_id}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
