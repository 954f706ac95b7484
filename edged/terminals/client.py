"""edged's client for a terminal's web API: pinned TLS, JWT (Basic as fallback), typed calls.

Every answer is ``{"code", "msg", "data"}``; anything but ``code`` 200 is a failure, also under
HTTP 200. A JWT is renewed before it expires and once more on a 401. The trusted certificate
fingerprint comes from the configuration (``tls_fingerprint``, which wins) or from the one an
operator recorded with ``edged terminals trust NAME`` (table ``terminal_trust``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import sqlite3
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from edged.config import Config, TerminalConfig
from edged.errors import ConfigError, TerminalAuthError, TerminalError, TerminalUntrusted
from edged.store import presence
from edged.store.urgency import Urgency
from edged.terminals import tlspin

log = logging.getLogger(__name__)

DOOR_MODES = {"open": 0, "hold": 1, "close": 2}  # /v1/device/door open_mode
RECORDS_PAGE = 200  # the limit of firmware 1.3.0 (and the first try where it is not documented)
RECORDS_PAGE_1_0 = 25  # firmware 1.0's limit
_VERSION = re.compile(r"(\d+(?:\.\d+)*)")


def firmware_version(info: dict[str, Any]) -> tuple[int, ...] | None:
    """The firmware version from device info (``sw_ver``, else ``api_ver``), e.g. (1, 2, 1)."""
    for key in ("sw_ver", "api_ver"):
        found = _VERSION.search(str(info.get(key) or ""))
        if found:
            return tuple(int(part) for part in found.group(1).split("."))
    return None


def records_page(version: tuple[int, ...] | None) -> int:
    """The first ``limit`` to ask of ``/v1/event/records``: 25 on 1.0, else 200 (adapted)."""
    if version is not None and version[:2] <= (1, 0):
        return RECORDS_PAGE_1_0
    return RECORDS_PAGE


def limit_from_error(message: str, current: int) -> int | None:
    """A smaller page size after a refused ``limit`` (the error names it); None if not that."""
    if "limit" not in message.lower():
        return None
    numbers = [int(n) for n in re.findall(r"\d+", message.split("limit", 1)[-1])]
    smaller = max(numbers) if numbers else current // 2  # "limit must be 1..25" names 25
    return smaller if 0 < smaller < current else None


def password(terminal: TerminalConfig) -> str:
    """The terminal's password: ``password_file`` wins; inline ``password`` with a warning."""
    if terminal.password_file:
        try:
            return Path(terminal.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"terminals.{terminal.name}.password_file: cannot read: {exc}"
            ) from None
    if terminal.password:
        log.warning(
            "terminal %s: password is inline in the configuration; prefer password_file",
            terminal.name,
        )
    return terminal.password


# ----- trust ----------------------------------------------------------------------------------


def recorded_pin(conn: sqlite3.Connection, terminal: TerminalConfig) -> str | None:
    """The fingerprint an operator trusted for this terminal's serial, if any."""
    return presence.trusted_fingerprint(conn, terminal.serial)


def pin_for(conn: sqlite3.Connection, terminal: TerminalConfig) -> str | None:
    """The fingerprint to pin: ``tls_fingerprint`` from the configuration wins over the record."""
    if terminal.tls_fingerprint:
        return tlspin.normalise(terminal.tls_fingerprint)
    return recorded_pin(conn, terminal)


def record_pin(
    conn: sqlite3.Connection, terminal: TerminalConfig, presented: tlspin.Presented
) -> None:
    """Remember an operator's trust in a certificate (replacing any earlier one)."""
    presence.trust(
        conn, terminal.serial, terminal.name, presented.fingerprint, presented.subject, time.time()
    )


def base_url(terminal: TerminalConfig) -> str:
    """``scheme://host:port`` of the terminal's API."""
    host = f"[{terminal.host}]" if ":" in terminal.host else terminal.host
    return f"{terminal.scheme}://{host}:{terminal.port}"


def tls_context(terminal: TerminalConfig, pin: str | None) -> ssl.SSLContext | None:
    """The TLS context for a terminal; refuses (TerminalUntrusted) when nothing is trusted."""
    if terminal.scheme == "http":
        return None
    if terminal.tls_mode == "ca":
        return tlspin.ca_context(terminal.ca_file)
    if not pin:
        raise TerminalUntrusted(
            f"terminal {terminal.name}: no trusted certificate; run "
            f"'edged terminals trust {terminal.name}' (or set tls_fingerprint)"
        )
    return tlspin.pinned_context(pin)


# ----- the client -----------------------------------------------------------------------------


class TerminalClient:
    """One terminal's API, for one task at a time (the reconciler's, or a CLI command's)."""

    def __init__(
        self,
        terminal: TerminalConfig,
        secret: str,
        pin: str | None,
        token_minutes: int = 60,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        urgency: Urgency | None = None,
    ) -> None:
        self.terminal = terminal
        self.urgency = urgency  # large answers are parsed aside of remote-auth answers
        self.secret = secret
        self.pin = pin
        self.token_minutes = token_minutes
        self.clock = clock
        self.context = tls_context(terminal, pin)
        verify: Any = self.context if self.context is not None else True
        self.http = httpx.AsyncClient(base_url=base_url(terminal), verify=verify, timeout=timeout)
        self.token: str | None = None
        self.token_expires = 0.0
        self.basic = terminal.auth == "basic"
        self.logins = 0
        self.refused_tokens = 0  # a token still in its lifetime got 401: the terminal rebooted
        self.version: tuple[int, ...] | None = None  # learnt from /v1/device/info
        self.has_ping: bool | None = None  # /v2/datasync/ping exists (1.2.1+); None: not known
        self.enabled_refused = False  # the terminal refused ``enabled`` in a subscribe
        self.page = RECORDS_PAGE

    async def aclose(self) -> None:
        """Close the connections."""
        await self.http.aclose()

    async def __aenter__(self) -> TerminalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----- transport ------------------------------------------------------------------------

    async def _send(self, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
        """One request; ``body`` as JSON, or ``bytes`` already encoded as JSON (a large batch,
        encoded in a worker thread by the caller)."""
        try:
            if isinstance(body, bytes):
                headers = {**headers, "content-type": "application/json"}
                response = await self.http.request(method, path, content=body, headers=headers)
            else:
                response = await self.http.request(method, path, json=body, headers=headers)
            # The answer is read whole; its stream refers back to it, a cycle that would keep
            # the request's body (a batch of photos: 0.5 MB) until the garbage collector runs.
            response.stream = httpx.ByteStream(b"")
            return response
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            mismatch = getattr(self.context, "last_mismatch", None)
            if mismatch:
                raise TerminalUntrusted(
                    f"terminal {self.terminal.name}: presented certificate {mismatch}, "
                    f"trusted is {self.pin}; refused. If the terminal was really replaced or "
                    f"re-keyed, run 'edged terminals trust {self.terminal.name}'"
                ) from None
            text = str(exc) or type(exc).__name__
            raise TerminalError(f"terminal {self.terminal.name}: {method} {path}: {text}") from None

    def _unwrap(self, path: str, response: httpx.Response, body: Any = ...) -> Any:
        if body is ...:  # not parsed by the caller
            body = _json(response)
        if not isinstance(body, dict):
            raise TerminalError(
                f"terminal {self.terminal.name}: {path}: HTTP {response.status_code}, not JSON"
            )
        code = body.get("code")
        if response.status_code != 200 or code != 200:
            raise TerminalError(
                f"terminal {self.terminal.name}: {path}: HTTP {response.status_code}, "
                f"code {code}: {body.get('msg') or body.get('message') or ''}".rstrip(": ")
            )
        return body.get("data")

    async def call(self, method: str, path: str, body: Any = None, large: bool = False) -> Any:
        """An authenticated call; returns ``data``. Logs in again once on a 401.

        ``large``: the answer can be big (a records page, ~100 KB of JSON): it is parsed in a
        worker thread, not on the event loop (:func:`_json_off_loop`). ``body``: JSON, or
        ``bytes`` already encoded as JSON.
        """
        for attempt in (1, 2):
            headers = await self._auth_headers()
            response = await self._send(method, path, body, headers)
            parsed = await _json_off_loop(response, self.urgency) if large else _json(response)
            if _unauthorised(response, parsed) and attempt == 1 and not self.basic:
                log.debug("terminal %s: 401 on %s, logging in again", self.terminal.name, path)
                self.token = None
                self.refused_tokens += 1
                continue
            if _unauthorised(response, parsed):
                raise TerminalAuthError(f"terminal {self.terminal.name}: {path}: unauthorised")
            return self._unwrap(path, response, parsed)
        raise AssertionError("unreachable")

    async def _auth_headers(self) -> dict[str, str]:
        if self.basic:
            pair = f"{self.terminal.username}:{self.secret}".encode()
            return {"authorization": "Basic " + base64.b64encode(pair).decode()}
        lifetime = self.token_minutes * 60.0
        renew_at = self.token_expires - min(60.0, lifetime / 5)
        if self.token is None or self.clock() >= renew_at:
            await self.login()
        if self.basic:  # login found no JWT support
            return await self._auth_headers()
        return {"authorization": f"Bearer {self.token}"}

    async def login(self) -> None:
        """Get a JWT valid ``token_minutes``; fall back to Basic where there is no login."""
        body = {
            "username": self.terminal.username,
            "password": self.secret,
            "validTime": self.token_minutes,
        }
        response = await self._send("POST", "/v1/auth/login", body, {})
        if response.status_code == 404:
            log.info("terminal %s: no JWT login, using Basic", self.terminal.name)
            self.basic = True
            return
        try:
            data = response.json()
        except ValueError:
            data = {}
        code = data.get("code") if isinstance(data, dict) else None
        if code in (1000, 1001) or response.status_code == 401:
            reasons = {1000: "account does not exist", 1001: "wrong password"}
            what = reasons.get(code, "refused") if isinstance(code, int) else "refused"
            raise TerminalAuthError(f"terminal {self.terminal.name}: login: {what}")
        token = self._unwrap("/v1/auth/login", response)
        if not isinstance(token, dict) or not isinstance(token.get("token"), str):
            raise TerminalError(f"terminal {self.terminal.name}: login: no token in the answer")
        self.token = token["token"]
        self.token_expires = self.clock() + self.token_minutes * 60.0
        self.logins += 1

    # ----- the calls ------------------------------------------------------------------------

    async def ping(self) -> bool:
        """The terminal answers the unauthenticated keep-alive (TLS and pin included).

        Firmware before 1.2.1 has no ``/v2/datasync/ping`` and answers 404: that is an answer
        too (the terminal is up); ``has_ping`` then says the ping proves nothing more.
        """
        try:
            response = await self._send("GET", "/v2/datasync/ping", None, {})
        except TerminalUntrusted:
            raise
        except TerminalError:
            return False
        if response.status_code == 404:
            self.has_ping = False
            return True
        self.has_ping = response.status_code == 200
        return self.has_ping

    async def device_info(self) -> dict[str, Any]:
        """``model``, ``device_sn``, ``sw_ver``, ... of the terminal; learns its firmware."""
        info = as_object(await self.call("GET", "/v1/device/info"), "/v1/device/info")
        version = firmware_version(info)
        if version != self.version:
            self.version = version
            self.page = records_page(version)
        return info

    @property
    def takes_enabled(self) -> bool:
        """``POST /v1/event/subscribe`` accepts ``enabled`` (1.3.0; 1.0-1.2.1 refuse it)."""
        if self.enabled_refused:
            return False
        return self.version is None or self.version[:2] >= (1, 3)

    async def subscription(self) -> dict[str, Any] | None:
        """The push registration, or None when the firmware does not say (``data: null``)."""
        data = await self.call("GET", "/v1/event/subscribe")
        return data if isinstance(data, dict) else None

    async def subscribe(self, event_dest: str, enabled: bool = True) -> None:
        """Set the push registration (idempotent); ``enabled`` only where the firmware takes it."""
        body: dict[str, Any] = {"event_dest": event_dest}
        if self.takes_enabled:
            body["enabled"] = enabled
        try:
            await self.call("POST", "/v1/event/subscribe", body)
        except TerminalAuthError:
            raise
        except TerminalError as exc:
            if "enabled" not in body or "enabled" not in str(exc):
                raise
            log.debug(
                "terminal %s: subscribe refuses 'enabled', sending without", self.terminal.name
            )
            self.enabled_refused = True
            await self.call("POST", "/v1/event/subscribe", {"event_dest": event_dest})

    async def functions(self) -> dict[str, Any]:
        """The whole functions object (auth mode, remote-auth address, record flags, ...)."""
        return as_object(await self.call("GET", "/v1/device/functions"), "/v1/device/functions")

    async def set_functions(self, functions: dict[str, Any]) -> None:
        """Write the whole functions object back (POST needs every required field)."""
        await self.call("POST", "/v1/device/functions", functions)

    async def records(self, begin: float, end: float, offset: int) -> dict[str, Any]:
        """One page (within the firmware's limit, oldest first) of the records in [begin, end].

        The page size starts at the firmware's documented limit (``page``) and shrinks to what
        the terminal names when it refuses a ``limit``.
        """
        while True:
            body = {
                "begin_time": int(begin),
                "end_time": int(end) + 1,
                "offset": offset,
                "limit": self.page,
                "sort": 0,
            }
            try:
                data = await self.call("POST", "/v1/event/records", body, large=True)
            except TerminalAuthError:
                raise
            except TerminalError as exc:
                smaller = limit_from_error(str(exc), self.page)
                if smaller is None:
                    raise
                log.debug(
                    "terminal %s: records limit %d refused, using %d",
                    self.terminal.name,
                    self.page,
                    smaller,
                )
                self.page = smaller
                continue
            return as_object(data, "/v1/event/records")

    async def open_door(self, mode: int = 0) -> None:
        """Drive the terminal's relay: 0 open then re-lock, 1 stay open, 2 stay closed."""
        if mode not in (0, 1, 2):
            raise ValueError("open_mode must be 0, 1 or 2")
        await self.call("POST", "/v1/device/door", {"open_mode": mode})

    async def reboot(self) -> None:
        """Ask the terminal to reboot."""
        await self.call("GET", "/v1/device/reboot")


def _unauthorised(response: httpx.Response, body: Any) -> bool:
    if response.status_code == 401:
        return True
    return isinstance(body, dict) and body.get("code") == 401


def _json(response: httpx.Response, **options: Any) -> Any:
    """The answer's JSON body; None when it is not JSON."""
    try:
        return response.json(**options)
    except ValueError:
        return None


def _let_loop_in(obj: dict[str, Any]) -> dict[str, Any]:
    """Leaves each decoded object as it is; being Python, lets the GIL go to the event loop."""
    return obj


def _aside_of(urgency: Urgency) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An ``object_hook`` that also sleeps while a remote-auth answer is being given."""

    def hook(obj: dict[str, Any]) -> dict[str, Any]:
        urgency.aside()  # returns at once when nobody waits
        return obj

    return hook


async def _json_off_loop(response: httpx.Response, urgency: Urgency | None = None) -> Any:
    """:func:`_json` in a worker thread, handing the GIL back between the objects it decodes.

    The decoder is C and holds the GIL for a whole document: in a thread alone it would still
    hold the event loop for as long as it takes. The ``object_hook`` runs Python code for every
    object (a record), where the interpreter lets a waiting thread in at its switch interval
    (5 ms): live requests wait for a few milliseconds at most, whatever the page's size. With
    ``urgency``, the thread also sleeps between two objects while a remote-auth answer is being
    given (edged/store/urgency.py), so that answer has the interpreter to itself.
    """
    hook = _let_loop_in if urgency is None else _aside_of(urgency)
    return await asyncio.to_thread(_json, response, object_hook=hook)


def as_object(data: Any, path: str) -> dict[str, Any]:
    """A terminal's ``data`` that must be an object, or a TerminalError naming ``path``."""
    if not isinstance(data, dict):
        raise TerminalError(f"{path}: expected an object, got {type(data).__name__}")
    return data


def client_for(
    cfg: Config,
    terminal: TerminalConfig,
    conn: sqlite3.Connection,
    urgency: Urgency | None = None,
) -> TerminalClient:
    """A client for a configured terminal, with its password and trusted fingerprint; large
    answers are parsed aside of remote-auth answers when ``urgency`` is given."""
    rec = cfg.reconciler
    return TerminalClient(
        terminal,
        password(terminal),
        pin_for(conn, terminal),
        token_minutes=rec.token_minutes,
        timeout=rec.request_timeout,
        urgency=urgency,
    )


async def open_door(client: TerminalClient, mode: int = 0) -> None:
    """Open a door through the terminal's own relay (``/v1/device/door``)."""
    await client.open_door(mode)


# ----- status (for `edged status`) ------------------------------------------------------------


def status_section(terminals: list[dict[str, Any]]) -> list[str]:
    """The terminals' part of ``edged status``: one line a terminal, from /api/v1/terminals."""
    lines = ["terminals"]
    if not terminals:
        return [*lines, "  (none configured)"]
    for t in terminals:
        name = t.get("name") or "?"
        state = t.get("state") or ("seen" if t.get("last_push") else "-")
        auth = t.get("auth_mode")
        parts = [
            f"  {name:<14} {t['serial']:<20} {state:<12}",
            f"push {t.get('last_push') or '-'}",
            f"beat {t.get('last_heartbeat') or '-'}",
            f"auth_mode {'-' if auth is None else auth}",
        ]
        clock = t.get("clock") or {}
        if clock.get("state") == "drifting":
            parts.append(f"CLOCK {clock.get('drift'):+.1f} s")
        line = "  ".join(parts)
        if t.get("last_error"):
            line += f"\n  {'':<14} error: {t['last_error']}"
        lines.append(line)
    return lines
