"""The daemon: open state, bind listeners, serve both apps on hypercorn, stop cleanly.

Everything that can fail (configuration, database, sockets) happens before ``serve()``: a
failing start-up can hang hypercorn 0.13, and a bind error should be one clear line. The
sockets are bound here and handed to hypercorn as ``fd://`` binds, which also lets the tests
and benchmarks listen on port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypercorn.asyncio.run
from hypercorn.asyncio import serve
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.config import Config as HyperConfig
from hypercorn.events import Updated

from edged import aio, config
from edged.admin import app as admin
from edged.doors.control import Doors
from edged.errors import EdgedError
from edged.hooks import Service
from edged.ops import clockcheck
from edged.ops.systemd import Notifier, keepalive
from edged.receive import receiver
from edged.store.events import Store
from edged.terminals.reconciler import Reconcilers
from edged.web.pages import Web

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 3600.0
GRACEFUL_TIMEOUT = 5.0  # in-flight answers get this long after a stop
STOP_GRACE = 3.0  # then the services; both together stay within the unit's TimeoutStopSec=10s
KEEP_ALIVE_TIMEOUT = 75.0  # terminals reuse connections; 75 s outlasts their 30 s heartbeat
# The attribute of a hypercorn Config that carries edged's request-head deadline (seconds).
HEAD_TIMEOUT_ATTR = "edged_header_timeout"

Reloader = Callable[[config.Config], None]

# Keys a reload cannot apply to a running daemon: sockets, routes, files, log handlers.
RESTART_ONLY = (
    ("receiver", "listen"),
    ("receiver", "event_path"),
    ("receiver", "auth_path"),
    ("admin", "listen"),
    ("storage", None),
    ("logging", None),
    ("mqtt", None),  # the broker link is built at start (a reload updates HA's entries only)
    ("web", "enabled"),
    ("web", "accounts_file"),
)


class BindError(EdgedError):
    """A listener's address cannot be bound."""

    exit_code = 71  # EX_OSERR


def bind(address: str) -> socket.socket:
    """A listening TCP socket for ``HOST:PORT`` (``[::1]:8090`` for IPv6)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sock


def _hyper_config(sockets: list[socket.socket], cfg: config.Config) -> HyperConfig:
    hc = HyperConfig()
    # hypercorn takes ownership of the descriptor it is given: hand it a duplicate; the caller
    # closes its own copy, or the kernel would keep accepting connections after a stop.
    hc.bind = [f"fd://{os.dup(s.fileno())}" for s in sockets]
    hc.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    hc.graceful_timeout = GRACEFUL_TIMEOUT
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    # hypercorn's read_timeout times every read, the idle wait between two kept-alive requests
    # included: 0.13 then closes the connection, 0.15+ stops reading and leaves it open (the
    # next request hangs). Set it past the keep-alive, so only a body stalled that long ends
    # there; edged bounds the head (HeadGuard) and the receiver's body (receiver.read_timeout).
    hc.read_timeout = int(KEEP_ALIVE_TIMEOUT) + 1
    setattr(hc, HEAD_TIMEOUT_ATTR, cfg.receiver.header_timeout)
    return hc


class _Reader:
    """A stream reader that reports each chunk it returns (hypercorn reads through it)."""

    def __init__(self, reader: asyncio.StreamReader, on_data: Callable[[], None]) -> None:
        self._reader = reader
        self._on_data = on_data

    def at_eof(self) -> bool:
        """Whether the peer has closed its side and every byte has been read."""
        return self._reader.at_eof()

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes, then report them."""
        data = await self._reader.read(n)
        if data:
            self._on_data()
        return data


class HeadGuard(TCPServer):
    """hypercorn's connection handler with a deadline on each request head.

    hypercorn times neither the head of a request nor, before 0.15, any read: a client that
    trickles header bytes holds its connection until the keep-alive ends. The deadline starts
    when a connection opens, and on a kept-alive one at the first byte after the idle wait; it
    ends when hypercorn has the whole head (its ``Updated(idle=False)``). A client that misses
    it gets 408 and the connection is closed. Configs without ``HEAD_TIMEOUT_ATTR`` (servers
    other than edged's listeners in the same process) are served exactly as hypercorn does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # 0.13 and 0.15+ differ in arguments: pass them on
        self._head_timeout: float | None = getattr(self.config, HEAD_TIMEOUT_ATTR, None)
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._idle = True
        if self._head_timeout:
            self.reader = _Reader(self.reader, self._on_data)  # type: ignore[assignment]
            self._arm()

    async def protocol_send(self, event: Any) -> None:
        """hypercorn's protocol_send, noting when a head is complete and when idle again."""
        await super().protocol_send(event)
        if isinstance(event, Updated) and self._head_timeout:
            self._idle = event.idle
            if not event.idle:
                self._disarm()

    def _on_data(self) -> None:
        if self._idle and self._timer is None:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._head_timeout or 0.0, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._idle:  # no head completed in time
            self._expiry = asyncio.ensure_future(self._refuse())

    async def _refuse(self) -> None:
        peer = self.writer.get_extra_info("peername")
        log.debug("request head from %s not complete in %s s: 408", peer, self._head_timeout)
        with contextlib.suppress(OSError, RuntimeError):
            self.writer.write(REQUEST_TIMEOUT)
            await self.writer.drain()
            if self.writer.can_write_eof():
                self.writer.write_eof()
            # Closing while the client still sends makes the kernel answer with a reset, which
            # can destroy the 408 before the client reads it: the answer and our end-of-stream
            # go first, the close a moment later (hypercorn's reader keeps draining meanwhile).
            await asyncio.sleep(REFUSE_LINGER)
        await self._close()


ASGIApp = Callable[[dict[str, Any], Any, Any], Any]


def reusable(app: ASGIApp) -> ASGIApp:
    """``app``, reading the (empty) body of a request that has none before it answers.

    hypercorn 0.13 (bookworm's) closes a kept-alive connection after answering a request whose
    body the application never read, an empty one included: every second GET on a browser's or
    a client's kept-alive connection then met a closed socket. A request that declares no body
    has its one, empty ``http.request`` message read here and handed to the app as its first;
    a request with a body is the app's to read (its own limits apply), as before.
    """

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or not _bodiless(scope):
            await app(scope, receive, send)
            return
        first = await receive()
        pending = [first]

        async def replay() -> Any:
            return pending.pop() if pending else await receive()

        await app(scope, replay, send)

    return wrapped


def _bodiless(scope: dict[str, Any]) -> bool:
    """The request declares no body: no ``transfer-encoding``, no or a zero ``content-length``."""
    for name, value in scope.get("headers") or ():
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            return value.strip() == b"0"
    return True


REFUSE_LINGER = 0.25  # seconds between a 408's end-of-stream and the close
_TIMEOUT_BODY = b'{"code":408,"msg":"request head not received in time"}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)

# hypercorn's serve() builds each connection's handler from this module global; there is no
# option for it. Only configs that carry HEAD_TIMEOUT_ATTR see a difference (see HeadGuard).
hypercorn.asyncio.run.TCPServer = HeadGuard  # type: ignore[misc]


@dataclass
class Daemon:
    """One running edged: its store, apps and listeners (assembled by edged/ops/wiring.py)."""

    cfg: config.Config
    store: Store
    receiver: receiver.Receiver
    admin: admin.Admin
    receiver_sockets: list[socket.socket]
    admin_sockets: list[socket.socket]
    services: list[Service] = field(default_factory=list)  # run while serving (edged/hooks.py)
    doors: Doors | None = None
    reconcilers: Reconcilers | None = None  # the managed terminals' (those with a host)
    web: Web | None = None  # the web page, served on the admin listener when [web] is enabled
    # What build opened (store, sockets, door outputs), closed by close() in reverse order.
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    on_ready: list[Callable[[], None]] = field(default_factory=list)
    receiver_port: int = field(init=False, default=0)  # the bound port, also when asked for 0
    admin_port: int = field(init=False, default=0)
    # ----- systemd: reload, stop, notifications -----
    reloaders: list[Reloader] = field(default_factory=list)  # called with a new, valid Config
    on_stop: list[Callable[[], None]] = field(default_factory=list)  # put outputs in safe state
    notifier: Notifier = field(default_factory=Notifier)

    def __post_init__(self) -> None:
        self.receiver_port = int(self.receiver_sockets[0].getsockname()[1])
        self.admin_port = int(self.admin_sockets[0].getsockname()[1])

    async def serve(self) -> None:
        """Serve until ``stopping`` is set, then shut down gracefully."""
        recv_app = receiver.create_app(self.receiver)
        admin_app = admin.create_app(self.admin, self.web.routes() if self.web else ())
        recv_hc = _hyper_config(self.receiver_sockets, self.cfg)
        admin_hc = _hyper_config(self.admin_sockets, self.cfg)
        for sock in self.receiver_sockets + self.admin_sockets:
            sock.close()  # hypercorn owns the listeners now (its duplicates)
        servers = [
            asyncio.ensure_future(serve(app, hc, shutdown_trigger=self.stopping.wait))  # type: ignore[arg-type]
            for app, hc in ((reusable(recv_app), recv_hc), (reusable(admin_app), admin_hc))
        ]
        self.tasks.append(asyncio.create_task(self._maintenance()))
        for service in self.services:
            self.tasks.append(asyncio.create_task(service()))
        await asyncio.sleep(0)
        for callback in self.on_ready:
            callback()
        # Listeners bound, database open, services (pins) started: now systemd may call us up.
        self.notifier.ready(self.status_line())
        self.tasks.append(asyncio.create_task(keepalive(self.notifier, self.status_line)))
        log.info(
            "edged ready: terminals on %s, admin on %s",
            ", ".join(self.cfg.receiver.listen),
            ", ".join(self.cfg.admin.listen),
        )
        try:
            await asyncio.gather(*servers)
        finally:
            if not self.stopping.is_set():  # the servers ended by themselves
                self.notifier.stopping()
            self.stopping.set()
            for task in await aio.cancel_all(self.tasks, give_up_after=STOP_GRACE):
                log.error("%s did not stop within %.0f s; stopping anyway", task, STOP_GRACE)
            self._safe_outputs()

    def close(self) -> None:
        """Release what build opened: door outputs, sockets, then the store (after serve)."""
        self.resources.close()

    def stop(self) -> None:
        """Begin a graceful stop: no new connections, in-flight answers finish."""
        if not self.stopping.is_set():
            log.info("edged stopping: finishing requests in flight")
            self.notifier.stopping()
            self.stopping.set()

    def reload(self) -> bool:
        """Re-read the configuration file; on any error keep the running one and say so."""
        self.notifier.reloading()
        try:
            new = config.load(self.cfg.source)
            config.admin_token(new)  # a token file that cannot be read fails the reload
        except EdgedError as exc:  # ConfigError: every problem found
            for problem in getattr(exc, "problems", None) or [str(exc)]:
                log.error("reload refused, keeping the running configuration: %s", problem)
            self.notifier.ready(self.status_line())
            return False
        for name in _restart_only_changes(self.cfg, new):
            log.warning("reload: %s changed; it takes effect after a restart", name)
        for reloader in self.reloaders:
            try:
                reloader(new)
            except Exception:
                log.exception("reload: %r failed", reloader)
        self.cfg = new
        log.info("configuration reloaded from %s", new.source)
        self.notifier.ready(self.status_line())
        return True

    def status_line(self) -> str:
        """The one-line status systemd shows: what edged is doing and how it fares."""
        stats = self.store.stats
        answered = sum(self.receiver.stats.answered.values())
        line = f"serving {len(self.cfg.terminals)} terminals; {answered} requests answered"
        line += f", {stats.records} records stored"
        if not self.store.healthy():
            line += f"; STORE FAILING: {stats.last_error}"
        return line

    def _safe_outputs(self) -> None:
        for callback in self.on_stop:
            try:
                callback()
            except Exception:
                log.exception("stop: %r failed", callback)

    async def _maintenance(self) -> None:
        """Hourly: clock sanity and retention pruning."""
        while True:
            clockcheck.report(time.time())
            cutoff = time.time() - self.cfg.storage.retention_days * 86400
            try:
                removed = await self.store.prune_events(cutoff)
                if removed:
                    log.info(
                        "retention: removed %d records older than %d days",
                        removed,
                        self.cfg.storage.retention_days,
                    )
            except EdgedError as exc:
                log.error("retention: %s", exc)
            await asyncio.sleep(MAINTENANCE_INTERVAL)


def _restart_only_changes(old: config.Config, new: config.Config) -> list[str]:
    changed = []
    for section, key in RESTART_ONLY:
        before, after = getattr(old, section), getattr(new, section)
        if key is None and before != after:
            changed.append(f"[{section}]")
        elif key is not None and getattr(before, key) != getattr(after, key):
            changed.append(f"{section}.{key}")
    return changed


def settle_heap() -> None:
    """Once the daemon is up: what start-up made (modules, classes, functions, the apps, some
    60,000 objects) goes out of the cyclic collector's reach.

    A full collection walks every tracked object; over start-up's it took 20-50 ms on a loaded
    2-core machine, every ten seconds or so under a replay, and a live answer that met one
    waited that long (docs/performance.md, "Replay after an outage"). Frozen, it walks only what
    was made since. Start-up's garbage is collected first, so nothing frozen is garbage; a
    frozen object is still freed when its last reference goes. Only ``edged run`` does this:
    a daemon built in a test's process would freeze the test's objects too.
    """
    gc.collect()
    gc.freeze()
    log.debug("heap settled: %d objects frozen", gc.get_freeze_count())


async def run(daemon: Daemon) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reloads the configuration; then close."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    daemon.on_ready.append(settle_heap)
    try:
        await daemon.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        daemon.close()  # the doors are normally closed by their service already
        log.info("edged stopped")
