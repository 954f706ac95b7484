"""The terminals' side: pushes, remote-auth requests and heartbeats over HTTP.

The path of a request: source address check, body read under a size limit and a deadline, JSON,
normalise, replay check, decision (remote-auth only), durable store, answer. The answer leaves only
after the commit. Bad input gets a 4xx JSON ``{code, msg}``; nothing a client sends yields a 500
or ``pass: true`` except a valid, live, granted request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edged import cache, policy
from edged.config import Config
from edged.errors import PayloadError, StoreError
from edged.logs import RateLimitedLog
from edged.model import Event, Kind
from edged.normalize import normalize
from edged.store import Record, Store, Stored

log = logging.getLogger(__name__)

Listener = Callable[[Event, Record, Stored], None]
# (event, the request's raw bytes, the cache's record) -> the record to store and answer
Authority = Callable[[Event, bytes | None, Record], Awaitable[Record]]

# How often a terminal's 'last seen' is written to the database (it is live in memory).
PERSIST_SEEN_EVERY = 60.0
_UPSERT_SEEN = (
    "INSERT INTO terminals_seen (serial, address, last_seen, last_heartbeat, last_push) "
    "VALUES (?,?,?,?,?) ON CONFLICT (serial) DO UPDATE SET address = excluded.address, "
    "last_seen = excluded.last_seen, "
    "last_heartbeat = COALESCE(excluded.last_heartbeat, last_heartbeat), "
    "last_push = COALESCE(excluded.last_push, last_push)"
)


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """A compact JSON response (faster than starlette's JSONResponse, same bytes)."""
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(content, status_code=status, media_type="application/json")


def ack_body() -> dict[str, Any]:
    """The acknowledgement of a push: the terminal wants both ``msg`` and ``message``."""
    return {"code": 200, "msg": "success", "message": "success", "data": {}}


def auth_body(decision: policy.Decision, event: Event) -> dict[str, Any]:
    """The answer to a remote-auth request."""
    user = event.user
    person = decision.person
    return {
        "code": 200,
        "msg": "OK",
        "message": "OK",
        "data": {
            "pass": decision.granted,
            "customtips": decision.customtips,
            "verify_code": decision.verify_code,
            "user_id": (user.user_id if user else None) or (person.id if person else ""),
            "user_name": (person.name if person else None) or (user.name if user else "") or "",
        },
    }


def error_body(status: int, message: str, auth: bool) -> dict[str, Any]:
    """A 4xx/5xx answer; on the auth path it also says ``pass: false`` explicitly."""
    body: dict[str, Any] = {"code": status, "msg": message, "message": message}
    if auth:
        body["data"] = {"pass": False, "customtips": "Try again", "verify_code": 3}
    return body


async def _collect(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body larger than {limit} bytes", "too-large")
        chunks.append(chunk)
    return b"".join(chunks)


class Rejected(Exception):
    """A request refused before it reached the store."""

    def __init__(self, status: int, message: str, category: str) -> None:
        self.status = status
        self.category = category
        super().__init__(message)


@dataclass
class TerminalSeen:
    """What the receiver last heard from one terminal."""

    serial: str
    address: str | None = None
    last_seen: float = 0.0
    last_heartbeat: float | None = None
    last_push: float | None = None
    persisted_at: float = 0.0


@dataclass
class ReceiverStats:
    """Counters of what the receiver answered."""

    answered: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)


class Receiver:
    """State shared by the receiver's endpoints."""

    def __init__(self, cfg: Config, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.networks = [
            ipaddress.ip_network(n, strict=False) for n in cfg.receiver.allowed_networks
        ]
        self.seen: dict[str, TerminalSeen] = self._load_seen()
        self.listeners: list[Listener] = []
        self.stats = ReceiverStats()
        self.bad_log = RateLimitedLog(log, per_minute=10)
        self.tips = policy.Tips.from_config(cfg.tips, cfg.site.language)
        self.tz = ZoneInfo(cfg.site.timezone)
        # Asked after the cache decided; may replace the answer (edged/upstream.Authority).
        self.authority: Authority | None = None

    def _load_seen(self) -> dict[str, TerminalSeen]:
        rows = self.store.db.conn.execute(
            "SELECT serial, address, last_seen, last_heartbeat, last_push FROM terminals_seen"
        ).fetchall()
        return {r[0]: TerminalSeen(*tuple(r)) for r in rows}

    # ----- checks ---------------------------------------------------------------------------

    def check_source(self, request: Request) -> str:
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            raise Rejected(403, "source address not allowed", "source") from None
        if not any(address in net for net in self.networks):
            raise Rejected(403, "source address not allowed", "source")
        return host

    async def read_body(self, request: Request) -> bytes:
        limit = self.cfg.receiver.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdecimal():
                raise Rejected(400, "invalid Content-Length", "body")
            if int(declared) > limit:
                raise Rejected(413, f"body larger than {limit} bytes", "too-large")
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype.lower():
            raise Rejected(415, "expected Content-Type application/json", "content-type")
        # wait_for, not asyncio.timeout: on Python 3.11.2 (Debian bookworm) asyncio.timeout
        # turns into a plain cancellation in a task that was ever cancelled before.
        try:
            return await asyncio.wait_for(_collect(request, limit), self.cfg.receiver.read_timeout)
        except TimeoutError:
            raise Rejected(408, "request body not received in time", "timeout") from None

    def parse(self, raw: bytes, request: Request) -> Event:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise Rejected(400, "body is not valid JSON", "json") from None
        header_sn = request.headers.get("sn")
        try:
            event = normalize(body, header_sn)
        except PayloadError as exc:
            raise Rejected(exc.status, str(exc), "payload") from None
        except RecursionError:
            raise Rejected(400, "body nested too deeply", "payload") from None
        if header_sn and header_sn.strip() and header_sn.strip() != event.serial:
            raise Rejected(403, "serial in header and body differ", "serial")
        return event

    def terminal_name(self, serial: str) -> str | None:
        terminal = self.cfg.terminal_by_serial(serial)
        if terminal is None and not self.cfg.receiver.accept_unknown_terminals:
            raise Rejected(403, f"unknown terminal serial {serial!r}", "unknown-terminal")
        return terminal.name if terminal else None

    # ----- handling -------------------------------------------------------------------------

    async def handle_post(self, request: Request, auth_path: bool) -> Response:
        try:
            address = self.check_source(request)
            raw = await self.read_body(request)
            event = self.parse(raw, request)
            terminal = self.terminal_name(event.serial)
            self.mark_seen(event.serial, address, push=True)
            first = self.store.find(event.dedup_key, self.clock())
            if first is not None:  # before cache, policy and upstream: decided once
                return self.answer_duplicate(event, first)
            if event.kind is Kind.AUTH:
                record = await self.decide(event, terminal, raw)
            else:
                record = self.acknowledge(event, terminal)
            stored = await self.store.save(record)
        except Rejected as exc:
            return self.reject(request, exc, auth_path)
        except StoreError as exc:
            self.stats.rejected["store"] += 1
            self.bad_log.warning("store", "answering 503: %s", exc)
            return json_response(error_body(503, "temporarily unable to store", auth_path), 503)
        self.stats.answered["duplicate" if stored.duplicate else event.kind.value] += 1
        if not stored.replayed:
            self.notify(event, record, stored)
        return json_response(stored.response)

    def answer_duplicate(self, event: Event, first: Stored) -> Response:
        """A record already stored: the first copy's answer, from a read; nothing is written."""
        self.stats.answered["duplicate"] += 1
        log.debug("duplicate of event %d from %s: %s", first.id, event.serial, event.dedup_key)
        return json_response(first.response)

    async def decide(self, event: Event, terminal: str | None, raw: bytes | None = None) -> Record:
        """Decide a remote-auth request; the Record carries the answer to send."""
        now = self.clock()
        replay = policy.replay_of(event, now, self.cfg.receiver.stale_after)
        door = self.door_of(event.serial)
        settings, view = cache.load(self.store.db.conn, event, door, now, self.tz)
        decision = policy.decide(event, settings, view, now, replay, self.tips)
        record = Record(
            event=event,
            received_at=now,
            replay=replay,
            terminal=terminal,
            response=auth_body(decision, event),
            decision="pass" if decision.granted else "deny",
            reason=decision.reason.value,
            rule=decision.rule,
            person_id=view.person.id if view.person else None,
            source="cache",
            door=door,
            explain=list(decision.steps),
        )
        # ----- upstream authority hook (edged/upstream.py): may replace the answer -----
        if self.authority is not None:
            record = await self.authority(event, raw, record)
        return record

    def door_of(self, serial: str) -> str:
        """The door a terminal serves: its ``door``, else its name, else its serial."""
        terminal = self.cfg.terminal_by_serial(serial)
        if terminal is None:
            return serial
        return terminal.door or terminal.name

    def acknowledge(self, event: Event, terminal: str | None) -> Record:
        now = self.clock()
        replay = policy.replay_of(event, now, self.cfg.receiver.stale_after)
        record = Record(event, now, replay, terminal, ack_body())
        record.door = self.door_of(event.serial)
        return record

    def notify(self, event: Event, record: Record, stored: Stored) -> None:
        for listener in self.listeners:
            try:
                listener(event, record, stored)
            except Exception:
                log.exception("receiver: listener %r failed", listener)

    def reject(self, request: Request, exc: Rejected, auth_path: bool) -> Response:
        self.stats.rejected[exc.category] += 1
        client = request.client.host if request.client else "?"
        self.bad_log.warning(exc.category, "refused %s from %s: %s", request.url.path, client, exc)
        response = json_response(error_body(exc.status, str(exc), auth_path), exc.status)
        if exc.status in (408, 413):
            response.headers["connection"] = "close"
        return response

    def mark_seen(self, serial: str, address: str | None, push: bool) -> None:
        now = self.clock()
        entry = self.seen.get(serial)
        if entry is None:
            entry = self.seen[serial] = TerminalSeen(serial)
        entry.address = address
        entry.last_seen = now
        if push:
            entry.last_push = now
        else:
            entry.last_heartbeat = now
        if now - entry.persisted_at >= PERSIST_SEEN_EVERY:
            entry.persisted_at = now
            row = (serial, address, now, entry.last_heartbeat, entry.last_push)
            self.store.submit_nowait(lambda conn: conn.execute(_UPSERT_SEEN, row))

    def heartbeat(self, request: Request) -> Response:
        try:
            address = self.check_source(request)
        except Rejected as exc:
            return self.reject(request, exc, False)
        serial = (request.headers.get("sn") or "").strip() or self._serial_for(address)
        if serial:
            self.mark_seen(serial, address, push=False)
        self.stats.answered["heartbeat"] += 1
        return json_response({"code": 200, "msg": "OK", "message": "OK", "data": None})

    def _serial_for(self, address: str) -> str | None:
        for entry in self.seen.values():
            if entry.address == address:
                return entry.serial
        return None

    def reconfigure(self, cfg: Config) -> None:
        """Take a reloaded configuration: networks, terminals, tips, limits (not paths)."""
        networks = [ipaddress.ip_network(n, strict=False) for n in cfg.receiver.allowed_networks]
        self.cfg, self.networks = cfg, networks
        self.tips = policy.Tips.from_config(cfg.tips, cfg.site.language)
        self.tz = ZoneInfo(cfg.site.timezone)


def create_app(receiver: Receiver) -> Starlette:
    """The terminals' ASGI app."""
    cfg = receiver.cfg.receiver

    async def post_event(request: Request) -> Response:
        return await receiver.handle_post(request, auth_path=False)

    async def post_auth(request: Request) -> Response:
        return await receiver.handle_post(request, auth_path=True)

    async def get_heartbeat(request: Request) -> Response:
        return receiver.heartbeat(request)

    routes = [
        Route(cfg.event_path, post_event, methods=["POST"]),
        Route(cfg.auth_path, post_auth, methods=["POST"]),
        Route(cfg.event_path, get_heartbeat, methods=["GET"]),
        Route(cfg.auth_path, get_heartbeat, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})
    app.state.receiver = receiver
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_response({"code": 404, "msg": "not found", "message": "not found"}, 404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return json_response(
        {"code": 405, "msg": "method not allowed", "message": "method not allowed"}, 405
    )
