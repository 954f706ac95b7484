"""The central server ("upstream"): asked first for decisions, fed every record, source of people.

The upstream speaks the terminals' own remote-auth protocol, so an existing third-party server
works unchanged: it receives the remote-auth body exactly as the terminal sent it and answers
``{code, data: {pass, customtips, ...}}``. edged asks it under a hard deadline and falls back to
its cache on any failure; a circuit breaker stops asking after repeated failures and probes in
the background (the terminals' heartbeat, ``GET <url>``) until the upstream answers again.
Forwarding lives in upstream/outbox.py, people sync in upstream/sync.py; upstream/feature.py
holds all three and hands the daemon their hooks. Behaviour and protocol: docs/upstream.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from edged import aio, config, logs
from edged.errors import ConfigError
from edged.model import Event
from edged.store.events import Record

log = logging.getLogger(__name__)

# Reasons edged adds when it overrides a cache grant (tips are configurable under [tips]).
UPSTREAM_UNAVAILABLE = "upstream_unavailable"
CACHE_STALE = "cache_stale"
DEFAULT_TIPS = {UPSTREAM_UNAVAILABLE: "Server offline", CACHE_STALE: "Access denied"}
NO_PERMISSION = 3  # the terminal's verify_code for "no permission"
REAP_DELAY = 0.05  # seconds between giving up on a call and cancelling it (see within())
# edged stops waiting this long before the deadline, plus what storing the answer takes now
# (Store.commit_estimate, at most a quarter of the deadline), so that the cache's answer, stored
# and sent, is out by the deadline even on slow storage.
ANSWER_MARGIN = 0.003
MAX_STORE_ALLOWANCE = 0.25  # of the deadline
ANSWER_FIELDS = ("user_id", "user_name", "ic_number", "verify_score", "verify_code")
# A decision answer is a few hundred bytes; past this it is refused unread (docs/upstream.md).
MAX_ANSWER_BYTES = 64 * 1024
EXCERPT_BYTES = 200  # of a refused answer, quoted in the decision's steps


class UpstreamFailure(Exception):
    """The upstream did not give a usable answer; the text is stored as ``upstream_error``."""

    def __init__(self, why: str, answer: bytes | None = None) -> None:
        super().__init__(why)
        self.answer = answer  # the start of what it answered, when it answered something


class TooLarge(Exception):
    """An answer's body is larger than the limit for its kind; it is not read further."""

    def __init__(self, limit: int, head: bytes | None) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.head = head  # the start of the body, None when refused on its Content-Length


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer whose body was read up to a limit."""

    status: int
    headers: httpx.Headers
    content: bytes


def tls_context(cfg: config.Config) -> ssl.SSLContext | bool:
    """Verification for an https upstream: ``upstream.ca_file``, else the system's CAs."""
    if not cfg.upstream.ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=cfg.upstream.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"upstream.ca_file: cannot load: {exc}") from None


def preflight(cfg: config.Config) -> None:
    """Read the upstream's token and CA files now: a ConfigError before anything is opened."""
    config.upstream_token(cfg)
    tls_context(cfg)


def make_client(cfg: config.Config, timeout: float, connections: int = 16) -> httpx.AsyncClient:
    """A persistent keep-alive client for the upstream, with its token and CA when set."""
    token = config.upstream_token(cfg)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    verify = tls_context(cfg)
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=60
    )
    # identity: a body's size on the wire is its size in memory (no decompression bomb)
    headers["accept-encoding"] = "identity"
    return httpx.AsyncClient(
        headers=headers, timeout=httpx.Timeout(timeout), limits=limits, verify=verify
    )


def _tip(text: Any) -> str:
    """The terminal shows at most 64 bytes."""
    if not isinstance(text, str):
        return ""
    return text.encode("utf-8")[:64].decode("utf-8", errors="ignore")


def parse_answer(status: int, content: bytes) -> dict[str, Any]:
    """The ``data`` to send the terminal, from the upstream's answer; raise UpstreamFailure."""
    head = content[:EXCERPT_BYTES]
    if status != 200:
        raise UpstreamFailure(f"http {status}", head)
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise UpstreamFailure("malformed: not JSON", head) from None
    if not isinstance(body, dict):
        raise UpstreamFailure("malformed: not a JSON object", head)
    code = body.get("code")
    if code != 200 or isinstance(code, bool):
        raise UpstreamFailure(f"code {str(code)[:20]}", head)
    data = body.get("data")
    if not isinstance(data, dict):
        raise UpstreamFailure("malformed: no data object", head)
    granted = data.get("pass")
    if not isinstance(granted, bool):
        raise UpstreamFailure("malformed: data.pass is not true or false", head)
    out: dict[str, Any] = {"pass": granted, "customtips": _tip(data.get("customtips"))}
    for key in ANSWER_FIELDS:
        value = data.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            out[key] = value
    return out


async def fetch(client: httpx.AsyncClient, method: str, url: str, limit: int, **kw: Any) -> Answer:
    """One request, its body read up to ``limit`` bytes (else TooLarge).

    Sent once more if a kept-alive connection turns out closed by the server. The body is
    streamed and reading stops past the limit, so an oversized answer costs at most the limit in
    memory; an announced ``Content-Length`` over it is refused before reading at all.
    """
    try:
        return await _fetch_once(client, method, url, limit, **kw)
    except httpx.RemoteProtocolError:  # closed without an answer (asking again is harmless)
        return await _fetch_once(client, method, url, limit, **kw)


async def _fetch_once(
    client: httpx.AsyncClient, method: str, url: str, limit: int, **kw: Any
) -> Answer:
    async with client.stream(method, url, **kw) as response:
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            raise TooLarge(limit, None)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():  # as sent: nothing inflates it
            size += len(chunk)
            if size > limit:
                raise TooLarge(limit, (b"".join(chunks) or chunk)[:EXCERPT_BYTES])
            chunks.append(chunk)
        return Answer(response.status_code, response.headers, b"".join(chunks))


async def within(deadline: float, call: Coroutine[Any, Any, Answer]) -> Answer:
    """Await an httpx call for at most ``deadline`` seconds, else raise TimeoutError.

    The call runs as its own task behind ``asyncio.shield``: the deadline cancels only the wait,
    and the call itself is cancelled a moment later (REAP_DELAY), once the answer to the waiting
    person is on its way, so its cleanup does not compete with the commit. Cancelling httpx in
    the caller's own task also leaks ``CancelledError`` past ``asyncio.timeout`` with anyio 3
    (Debian bookworm).
    """
    task = asyncio.ensure_future(call)
    try:  # edged/aio.py: neither wait_for nor asyncio.timeout is safe on Python 3.11
        return await aio.within(asyncio.shield(task), deadline)
    except BaseException:
        asyncio.get_running_loop().call_later(REAP_DELAY, task.cancel)
        task.add_done_callback(_reap)
        raise


def _reap(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise


def _note(record: Record, step: str) -> None:
    """Add one step to the record's stored explanation (``edged why``)."""
    record.explain = [*(record.explain or []), step]


def _ms(seconds: float) -> str:
    return f"{max(seconds, 0.0) * 1000:.0f} ms"


def excerpt(content: bytes) -> str:
    """The start of an answer as printable text: JSON-quoted, so control bytes stay visible.

    Card numbers, PINs and the like are masked (logs.redact): the text is stored and shown.
    """
    text = content[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return json.dumps(logs.redact(text), ensure_ascii=False)


def answered_step(data: dict[str, Any], took: float) -> str:
    """The step naming what the upstream answered (card numbers masked) and how long it took."""
    shown = logs.redact(json.dumps(data, ensure_ascii=False, separators=(", ", ": ")))
    if len(shown) > 2 * EXCERPT_BYTES:
        shown = shown[: 2 * EXCERPT_BYTES] + "..."
    return f"upstream answered in {_ms(took)}: {shown}"


def not_used_step(exc: UpstreamFailure, took: float) -> str:
    """The step saying why the upstream's answer was not used, with what it sent if anything."""
    step = f"upstream not used: {exc} (after {_ms(took)})"
    if exc.answer is not None:
        step += f"; it answered {excerpt(exc.answer)}"
    return step


class Breaker:
    """Consecutive failures open it; a successful call or probe closes it."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.failures = 0
        self.open = False
        self.opened_at: float | None = None
        self.last_error: str | None = None

    def success(self) -> bool:
        """Record a success; returns whether the breaker just closed."""
        self.failures = 0
        was_open, self.open = self.open, False
        return was_open

    def failure(self, why: str, now: float) -> bool:
        """Record a failure; returns whether the breaker just opened."""
        self.failures += 1
        self.last_error = why
        if self.open or self.failures < self.threshold:
            return False
        self.open, self.opened_at = True, now
        return True


class Authority:
    """Asks the upstream for remote-auth decisions; falls back to the cache's record."""

    def __init__(
        self,
        cfg: config.Config,
        client: httpx.AsyncClient | None,
        stale: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.time,
        store_time: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.cfg = cfg
        self.store_time = store_time
        self.up = cfg.upstream
        self.client = client
        self.stale = stale
        self.clock = clock
        self.breaker = Breaker(self.up.breaker_failures)
        self.stats: Counter[str] = Counter()
        self.tips = {**DEFAULT_TIPS, **cfg.tips}
        self._probe: asyncio.Task[None] | None = None

    async def __call__(self, event: Event, raw: bytes | None, record: Record) -> Record:
        """The record to store and answer: the upstream's decision, or the cache's, amended."""
        if record.replay is not None:
            self.stats["replayed"] += 1
            _note(record, "upstream not asked: a replayed request is never sent upstream")
            return record  # replayed requests are never sent upstream, never granted
        if self.client is not None and self.up.url:
            started = self.clock()
            try:
                if raw is None:  # a caller without the request's bytes: not the upstream's fault
                    raise UpstreamFailure("not asked: no request body")
                # The person has waited since the request arrived: the deadline counts from then.
                waited = max(0.0, started - record.received_at)
                budget = self.up.deadline - waited - self.answer_margin()
                data = await self.ask(raw, budget)
            except UpstreamFailure as exc:
                record.upstream_error = str(exc)
                _note(record, not_used_step(exc, self.clock() - started))
            else:
                return self._from_upstream(record, data, self.clock() - started)
            return self._fallback(record)
        return self._from_cache(record)

    def _fallback(self, record: Record) -> Record:
        """The cache's record when the upstream was not used: a grant only where allowed."""
        if record.decision == "pass" and not self.cache_may_grant(record.door):
            self._deny(record, UPSTREAM_UNAVAILABLE)
            _note(record, f"DENY {UPSTREAM_UNAVAILABLE}: {self._why_no_grant(record.door)}")
            return self._from_cache(record)
        self._from_cache(record)
        if record.reason != CACHE_STALE:
            verdict = f"{(record.decision or '').upper()} {record.reason}"
            _note(record, f"{verdict}: the cache decided (the upstream was not used)")
        return record

    def answer_margin(self) -> float:
        """Seconds before the deadline to stop waiting: sending, and storing as it goes now."""
        allowance = min(self.store_time(), MAX_STORE_ALLOWANCE * self.up.deadline)
        return ANSWER_MARGIN + allowance

    def _from_cache(self, record: Record) -> Record:
        """The cache's record, a grant withdrawn when the cache is stale and that means deny."""
        self.stats["cache"] += 1
        if record.decision == "pass" and self.stale is not None and self.stale(self.clock()):
            self.stats["stale"] += 1
            stale = "the people cache is older than upstream.max_cache_age"
            if record.person_id in self.up.override_people:
                _note(record, f"{stale}; {record.person_id} is in upstream.override_people")
            elif self.up.stale_cache == "deny":
                self._deny(record, CACHE_STALE)
                _note(record, f"DENY {CACHE_STALE}: {stale} (upstream.stale_cache = deny)")
            else:
                _note(record, f"{stale}; it keeps deciding (upstream.stale_cache = keep)")
        return record

    def cache_may_grant(self, door: str | None) -> bool:
        """Whether the cache may grant at this door (the record's) while the upstream is away."""
        if not self.up.cache_may_grant:
            return False
        return (door or "") not in self.up.online_only_doors

    def _why_no_grant(self, door: str | None) -> str:
        if not self.up.cache_may_grant:
            return "the cache may not grant without the upstream (upstream.cache_may_grant)"
        return f"door {door} is in upstream.online_only_doors: only the upstream may grant"

    async def ask(self, raw: bytes, budget: float | None = None) -> dict[str, Any]:
        """The upstream's answer within ``budget`` (default: the deadline), or UpstreamFailure."""
        if self.breaker.open:
            self.stats["breaker_open"] += 1
            raise UpstreamFailure("breaker open")
        assert self.client is not None
        self.stats["asked"] += 1
        try:
            answer = await within(
                self.up.deadline if budget is None else max(budget, 0.001),
                fetch(
                    self.client,
                    "POST",
                    self.up.url,
                    MAX_ANSWER_BYTES,
                    content=raw,
                    headers={"content-type": "application/json"},
                ),
            )
            data = parse_answer(answer.status, answer.content)
        except TimeoutError:
            self._failed("timeout")
            raise UpstreamFailure("timeout") from None
        except (httpx.HTTPError, OSError) as exc:  # OSError: TLS errors with httpx 0.23
            why = f"connection: {type(exc).__name__}"
            self._failed(why)
            raise UpstreamFailure(why) from None
        except TooLarge as exc:
            why = f"malformed: {exc}"
            self._failed(why)
            raise UpstreamFailure(why, exc.head) from None
        except UpstreamFailure as exc:
            self._failed(str(exc))
            raise
        self._succeeded()
        return data

    def _from_upstream(self, record: Record, data: dict[str, Any], took: float) -> Record:
        self.stats["upstream"] += 1
        granted = bool(data["pass"])
        answered = answered_step(data, took)  # what the upstream itself sent, before defaults
        if "verify_code" not in data:
            data["verify_code"] = 2 if granted else NO_PERMISSION
        data.setdefault("user_id", record.response.get("data", {}).get("user_id", ""))
        data.setdefault("user_name", record.response.get("data", {}).get("user_name", ""))
        record.response = {"code": 200, "msg": "OK", "message": "OK", "data": data}
        cache_verdict = (record.decision or "").upper()
        record.decision = "pass" if granted else "deny"
        record.reason = "upstream_granted" if granted else "upstream_denied"
        record.rule = "upstream"
        record.source = "upstream"
        record.upstream_error = None
        record.explain = [f"cache, not used: {step}" for step in record.explain or []]
        record.explain += [
            answered,
            f"{record.decision.upper()} {record.reason}: the upstream decided "
            f"(the cache's {cache_verdict or 'verdict'} above is not used)",
        ]
        return record

    def _deny(self, record: Record, reason: str) -> None:
        data = dict(record.response.get("data") or {})
        text = self.tips.get(reason) or DEFAULT_TIPS[reason]
        data.update({"pass": False, "customtips": _tip(text), "verify_code": NO_PERMISSION})
        record.response = {**record.response, "data": data}
        record.decision = "deny"
        record.reason = reason
        record.rule = f"upstream:{reason}"

    def _failed(self, why: str) -> None:
        self.stats["failures"] += 1
        log.debug("upstream %s: no usable answer: %s", self.up.url, why)
        if self.breaker.failure(why, self.clock()):
            log.error(
                "upstream %s is not answering (%s, %d times in a row): deciding from the local "
                "cache until it is back",
                self.up.url,
                why,
                self.breaker.failures,
            )
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    def _succeeded(self) -> None:
        if self.breaker.success():
            log.info("upstream %s answers again: asking it for decisions", self.up.url)

    async def _probe_until_back(self) -> None:
        """While the breaker is open: the terminals' heartbeat, ``GET <url>``, until a 200."""
        assert self.client is not None
        while self.breaker.open:
            await asyncio.sleep(self.up.probe_interval)
            probe = fetch(self.client, "GET", self.up.url, MAX_ANSWER_BYTES)
            try:
                answer = await within(self.up.deadline, probe)
            except (TimeoutError, httpx.HTTPError, OSError, TooLarge) as exc:
                log.debug("upstream probe failed: %s", type(exc).__name__)
                continue
            if answer.status == 200:
                self._succeeded()
            else:
                log.debug("upstream probe: HTTP %d", answer.status)

    async def aclose(self) -> None:
        """Stop probing and close the connections."""
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self.client is not None:
            await self.client.aclose()

    def status(self) -> dict[str, Any]:
        """Breaker state and counters, for /readyz and the admin API."""
        return {
            "url": self.up.url or None,
            "breaker": "open" if self.breaker.open else "closed",
            "consecutive_failures": self.breaker.failures,
            "last_error": self.breaker.last_error,
            "opened_at": self.breaker.opened_at if self.breaker.open else None,
            "counts": dict(self.stats),
        }
