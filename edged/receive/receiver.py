"""The terminals' side: pushes, remote-auth requests and heartbeats over HTTP.

The path of a request: source address check, body read under a size limit and a deadline, JSON,
normalise, the terminal's own address (receive/binding.py), replay check, decision (remote-auth
only), durable store, answer. The answer leaves only after the commit. Bad input gets a 4xx JSON
``{code, msg}``; nothing a client sends yields a 500 or ``pass: true`` except a valid, live,
granted request.

A terminal keeps a record it got no acknowledgement for at the head of its buffer, so a refused
record would stall everything behind it. A configured terminal's JSON record that fails
validation (or is over ``max_body_bytes`` only because of its image) is therefore stored as a
MALFORMED record, acknowledged (a remote-auth request: denied), counted and never acted on.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edged import aio
from edged.access import lookup
from edged.config import Config
from edged.decide import policy
from edged.errors import PayloadError, StoreError
from edged.histogram import Histogram
from edged.logs import RateLimitedLog
from edged.model import Event, Kind
from edged.receive import binding
from edged.receive.normalize import image_chars, is_envelope, malformed, normalize
from edged.store import presence
from edged.store.events import Record, Store, Stored

log = logging.getLogger(__name__)

Listener = Callable[[Event, Record, Stored], None]
# (event, the request's raw bytes, the cache's record) -> the record to store and answer
Authorize = Callable[[Event, bytes | None, Record], Awaitable[Record]]

# A configured terminal's body may be this many times receiver.max_body_bytes: past the limit
# only because of its image, it is read, its image dropped and the rest stored as malformed.
OVERSIZE_FACTOR = 4
# How often a terminal's 'last seen' is written to the database (it is live in memory).
PERSIST_SEEN_EVERY = 60.0


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


def denial_body() -> dict[str, Any]:
    """The answer to a remote-auth request that cannot be read: the normal shape, denied."""
    data = {"pass": False, "customtips": "Try again", "verify_code": 3}
    return {"code": 200, "msg": "OK", "message": "OK", "data": {**data, "user_id": ""}}


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


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise Rejected(400, "body is not valid JSON", "json") from None


def _names_serial(body: Any) -> bool:
    """The body carries its terminal's ``deviceSN`` (flat, or in a push's ``data``)."""
    if not isinstance(body, dict):
        return False
    data = body.get("data")
    serial = (data if isinstance(data, dict) else body).get("deviceSN")
    return isinstance(serial, str) and bool(serial.strip())


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
    # For /metrics (edged/admin/metrics.py): answers by path ("auth", "push", "heartbeat") and
    # status; how long the remote-auth and push answers took; decisions by (decision, reason);
    # live records vs replayed ones stored.
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    seconds: dict[str, Histogram] = field(
        default_factory=lambda: {"auth": Histogram(), "push": Histogram()}
    )
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    replayed: int = 0

    def answered_in(self, path: str, status: int, seconds: float | None) -> None:
        """Count one answer on ``path`` and, for auth and push, how long it took."""
        self.requests[(path, status)] += 1
        if seconds is not None and path in self.seconds:
            self.seconds[path].observe(seconds)


class Receiver:
    """State shared by the receiver's endpoints."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: Callable[[], float] = time.time,
        *,
        authority: Authorize | None = None,
        listeners: Iterable[Listener] = (),
        seen: dict[str, TerminalSeen] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.networks = [
            ipaddress.ip_network(n, strict=False) for n in cfg.receiver.allowed_networks
        ]
        # Shared with the terminals' reconcilers when given (edged/ops/wiring.py), else read.
        self.seen: dict[str, TerminalSeen] = self.load_seen(store) if seen is None else seen
        self.binding = binding.Binder(cfg, store, clock, heard=self.seen)
        # Called with each live, first-seen record after its commit (doors, forwarding).
        self.listeners: list[Listener] = list(listeners)
        self.stats = ReceiverStats()
        self.bad_log = RateLimitedLog(log, per_minute=10)
        self.tips = policy.Tips.from_config(cfg.tips, cfg.site.language)
        self.tz = ZoneInfo(cfg.site.timezone)
        # Asked after the cache decided; may replace the answer (edged/upstream/client.py).
        self.authority = authority

    @staticmethod
    def load_seen(store: Store) -> dict[str, TerminalSeen]:
        """What the receiver last stored about each terminal, by serial."""
        return {r[0]: TerminalSeen(*r) for r in presence.seen_all(store.reader)}

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

    async def read_body(self, request: Request, address: str = "") -> bytes:
        """The body, within max_body_bytes (OVERSIZE_FACTOR times that from a known terminal)."""
        limit = self.cfg.receiver.max_body_bytes
        if self.binding.known_source(request.headers.get("sn"), address):
            limit *= OVERSIZE_FACTOR
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdecimal():
                raise Rejected(400, "invalid Content-Length", "body")
            if len(declared) > 18 or int(declared) > limit:
                raise Rejected(413, f"body larger than {limit} bytes", "too-large")
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype.lower():
            raise Rejected(415, "expected Content-Type application/json", "content-type")
        try:  # edged/aio.py: neither wait_for nor asyncio.timeout is safe on Python 3.11
            return await aio.within(_collect(request, limit), self.cfg.receiver.read_timeout)
        except TimeoutError:
            raise Rejected(408, "request body not received in time", "timeout") from None

    async def sender(self, request: Request, body: Any, address: str) -> str | None:
        """The serial the source address is bound to, asked only of a request that names no
        terminal itself (an alarm, firmware before 1.2.1): most requests skip the look-up."""
        if request.headers.get("sn") or _names_serial(body):
            return None
        return await self.binding.identify(address)

    def parse(self, body: Any, raw: bytes, request: Request, sender: str | None = None) -> Event:
        """The request's Event; a known terminal's unreadable record as a MALFORMED one.

        ``sender`` is the serial the request's source address is bound to (receive/binding.py).
        """
        header_sn = request.headers.get("sn")
        limit = self.cfg.receiver.max_body_bytes
        if len(raw) > limit:
            refusal = Rejected(413, f"body larger than {limit} bytes", "too-large")
            if len(raw) - image_chars(body) > limit:
                raise refusal
            return self.as_malformed(body, header_sn or sender, refusal, "; image dropped")
        try:
            event = normalize(body, header_sn or sender)
        except PayloadError as exc:
            refusal = Rejected(exc.status, str(exc), "payload")
            return self.as_malformed(body, header_sn or sender, refusal)
        except RecursionError:
            refusal = Rejected(400, "body nested too deeply", "payload")
            return self.as_malformed(body, header_sn or sender, refusal)
        self.check_serial(header_sn, event.serial)
        return event

    def as_malformed(
        self, body: Any, header_sn: str | None, refusal: Rejected, note: str = ""
    ) -> Event:
        """A known terminal's record that failed validation, as MALFORMED; else ``refusal``."""
        event = malformed(body, header_sn, f"{refusal}{note}")
        if event is None:
            raise refusal
        known = self.cfg.terminal_by_serial(event.serial) is not None
        if not known and not self.cfg.receiver.accept_unknown_terminals:
            raise refusal
        self.check_serial(header_sn, event.serial)
        return event

    @staticmethod
    def check_serial(header_sn: str | None, serial: str) -> None:
        """The ``sn`` header, when sent, names the body's terminal."""
        if header_sn and header_sn.strip() and header_sn.strip() != serial:
            raise Rejected(403, "serial in header and body differ", "serial")

    def terminal_name(self, serial: str) -> str | None:
        terminal = self.cfg.terminal_by_serial(serial)
        if terminal is None and not self.cfg.receiver.accept_unknown_terminals:
            raise Rejected(403, f"unknown terminal serial {serial!r}", "unknown-terminal")
        return terminal.name if terminal else None

    # ----- handling -------------------------------------------------------------------------

    async def handle_post(self, request: Request, auth_path: bool) -> Response:
        """A push or a remote-auth request. A remote-auth request is marked urgent from its
        start to its answer; a push steps aside for those (edged/store/urgency.py)."""
        if auth_path:
            with self.store.urgency.marked():
                return await self._handle_post(request, auth_path)
        await self.store.urgency.behind()
        return await self._handle_post(request, auth_path)

    async def _handle_post(self, request: Request, auth_path: bool) -> Response:
        try:
            address = self.check_source(request)
            raw = await self.read_body(request, address)
            body = _decode(raw)
            event = self.parse(body, raw, request, await self.sender(request, body, address))
            terminal = self.terminal_name(event.serial)
            await self.binding.admit(event.serial, address)
            self.mark_seen(event.serial, address, push=True)
            first = self.store.find(event.dedup_key, self.clock())
            if first is not None:  # before cache, policy and upstream: decided once
                return self.answer_duplicate(event, first)
            if event.kind is Kind.MALFORMED:
                record = self.flag(event, terminal)
            elif event.kind is Kind.AUTH:
                record = await self.decide(event, terminal, raw)
            else:
                record = self.acknowledge(event, terminal)
            stored = await self.store.save(record)
        except Rejected as exc:
            return self.reject(request, exc, auth_path)
        except binding.Forged as exc:
            return await self.forged(request, exc, raw, auth_path)
        except StoreError as exc:
            self.stats.rejected["store"] += 1
            self.bad_log.warning("store", "answering 503: %s", exc)
            return json_response(error_body(503, "temporarily unable to store", auth_path), 503)
        self.stats.answered["duplicate" if stored.duplicate else event.kind.value] += 1
        if not stored.duplicate:
            if stored.replayed:
                self.stats.replayed += 1
            if record.decision:
                self.stats.decisions[(record.decision, record.reason or "")] += 1
        if event.kind is Kind.MALFORMED:
            if not stored.duplicate:
                self.bad_log.warning(
                    "malformed",
                    "stored malformed record #%d from %s: %s",
                    stored.id,
                    event.serial,
                    event.problem,
                )
        elif not stored.replayed:
            self.tell_listeners(event, record, stored)
        return json_response(stored.response)

    def flag(self, event: Event, terminal: str | None) -> Record:
        """A MALFORMED record: acknowledged, or denied for a remote-auth request; no decision."""
        response = ack_body() if is_envelope(event.raw) else denial_body()
        record = Record(event, self.clock(), None, terminal, response, reason=event.problem)
        record.door = self.door_of(event.serial)
        return record

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
        settings, view = lookup.load(self.store.reader, event, door, now, self.tz)
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
        # ----- upstream authority hook (edged/upstream/client.py): may replace the answer -----
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

    def tell_listeners(self, event: Event, record: Record, stored: Stored) -> None:
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

    async def forged(
        self, request: Request, exc: binding.Forged, raw: bytes, auth_path: bool
    ) -> Response:
        """Refuse a request naming a terminal from another address: 403, recorded, alarmed."""
        self.stats.rejected["forged"] += 1
        await self.binding.refuse(exc, request.url.path, raw)
        return json_response(error_body(403, str(exc), auth_path), 403)

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
            self.store.submit_nowait(lambda conn: presence.mark_seen(conn, row))

    async def heartbeat(self, request: Request) -> Response:
        """Answer a terminal's heartbeat; it marks a terminal seen only from its own address."""
        try:
            address = self.check_source(request)
            claimed = (request.headers.get("sn") or "").strip()
            if claimed:
                await self.binding.admit(claimed, address, first_contact=False)
        except Rejected as exc:
            return self.reject(request, exc, False)
        except binding.Forged as exc:
            return await self.forged(request, exc, b"", False)
        serial = claimed or await self.binding.identify(address)
        if serial:
            self.mark_seen(serial, address, push=False)
        self.stats.answered["heartbeat"] += 1
        return json_response({"code": 200, "msg": "OK", "message": "OK", "data": None})

    def reconfigure(self, cfg: Config) -> None:
        """Take a reloaded configuration: networks, terminals, tips, limits (not paths)."""
        networks = [ipaddress.ip_network(n, strict=False) for n in cfg.receiver.allowed_networks]
        self.cfg, self.networks = cfg, networks
        self.binding.reconfigure(cfg)
        self.tips = policy.Tips.from_config(cfg.tips, cfg.site.language)
        self.tz = ZoneInfo(cfg.site.timezone)


def create_app(receiver: Receiver) -> Starlette:
    """The terminals' ASGI app."""
    cfg = receiver.cfg.receiver

    def timed(path: str, auth_path: bool) -> Callable[[Request], Awaitable[Response]]:
        """A POST endpoint that counts its answer and how long it took (for /metrics)."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            response = await receiver.handle_post(request, auth_path=auth_path)
            receiver.stats.answered_in(path, response.status_code, time.perf_counter() - started)
            return response

        return endpoint

    post_event, post_auth = timed("push", False), timed("auth", True)

    async def get_heartbeat(request: Request) -> Response:
        response = await receiver.heartbeat(request)
        receiver.stats.answered_in("heartbeat", response.status_code, None)
        return response

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
