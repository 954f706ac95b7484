"""The daemon: open state, bind listeners, serve both apps on hypercorn, stop cleanly.

Everything that can fail (configuration, database, sockets) happens before ``serve()``: a
failing start-up can hang hypercorn 0.13, and a bind error should be one clear line. The
sockets are bound here and handed to hypercorn as ``fd://`` binds, which also lets the tests
and benchmarks listen on port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as HyperConfig

from edged import admin, clock, config, receiver, reconciler
from edged.errors import EdgedError
from edged.store import Store

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 3600.0


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
    # hypercorn takes ownership of the descriptor it is given: hand it a duplicate, and keep
    # ours (for the port number and to close at the very end).
    hc.bind = [f"fd://{os.dup(s.fileno())}" for s in sockets]
    hc.keep_alive_timeout = 75.0  # terminals reuse connections; 75 s outlasts their 30 s beat
    hc.graceful_timeout = 5.0
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    if hasattr(hc, "read_timeout"):  # hypercorn >= 0.15 (older ones rely on edged's own)
        hc.read_timeout = int(cfg.receiver.read_timeout) or 1
    return hc


@dataclass
class Daemon:
    """One running edged: its store, apps and listeners."""

    cfg: config.Config
    store: Store
    receiver: receiver.Receiver
    admin: admin.Admin
    receiver_sockets: list[socket.socket]
    admin_sockets: list[socket.socket]
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    on_ready: list[Callable[[], None]] = field(default_factory=list)
    services: list[Callable[[Daemon], Coroutine[Any, Any, None]]] = field(default_factory=list)
    receiver_port: int = field(init=False, default=0)  # the bound port, also when asked for 0
    admin_port: int = field(init=False, default=0)
    terminals: reconciler.Reconcilers | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.receiver_port = int(self.receiver_sockets[0].getsockname()[1])
        self.admin_port = int(self.admin_sockets[0].getsockname()[1])

    async def serve(self) -> None:
        """Serve until ``stopping`` is set, then shut down gracefully."""
        recv_app = receiver.create_app(self.receiver)
        admin_app = admin.create_app(self.admin)
        recv_hc = _hyper_config(self.receiver_sockets, self.cfg)
        admin_hc = _hyper_config(self.admin_sockets, self.cfg)
        servers = [
            asyncio.ensure_future(serve(app, hc, shutdown_trigger=self.stopping.wait))  # type: ignore[arg-type]
            for app, hc in ((recv_app, recv_hc), (admin_app, admin_hc))
        ]
        self.tasks.append(asyncio.create_task(self._maintenance()))
        for service in self.services:
            self.tasks.append(asyncio.create_task(service(self)))
        await asyncio.sleep(0)
        for callback in self.on_ready:
            callback()
        log.info(
            "edged ready: terminals on %s, admin on %s",
            ", ".join(self.cfg.receiver.listen),
            ", ".join(self.cfg.admin.listen),
        )
        try:
            await asyncio.gather(*servers)
        finally:
            self.stopping.set()
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for sock in self.receiver_sockets + self.admin_sockets:
                sock.close()

    async def _maintenance(self) -> None:
        """Hourly: clock sanity and retention pruning."""
        while True:
            clock.report(time.time())
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


def build(cfg: config.Config) -> Daemon:
    """Open the state and bind the listeners; raises a clear EdgedError on failure."""
    token = config.admin_token(cfg)
    store = Store(
        cfg.storage.database_path,
        cfg.storage.images_path if cfg.storage.store_images else None,
        cfg.storage.images_max_bytes,
    )
    recv_socks: list[socket.socket] = []
    admin_socks: list[socket.socket] = []
    try:
        recv_socks = [bind(a) for a in cfg.receiver.listen]
        admin_socks = [bind(a) for a in cfg.admin.listen]
    except BindError:
        for sock in recv_socks + admin_socks:
            sock.close()
        store.close()
        raise
    recv = receiver.Receiver(cfg, store)
    adm = admin.Admin(cfg, recv, token)
    daemon = Daemon(cfg, store, recv, adm, recv_socks, admin_socks)
    # ----- terminals: keep managed terminals registered, show their health -----
    terms = reconciler.Reconcilers(cfg, store, recv)
    daemon.terminals = terms
    if terms.items:
        daemon.services.append(terms.run)
        adm.readiness.append(terms.readiness)
        adm.resubscribe = terms.resubscribe
    adm.terminal_health = terms.health
    # ----- end terminals -----
    return daemon


async def run(cfg: config.Config) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    clock.report(time.time())
    daemon = build(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stopping.set)
    try:
        await daemon.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        daemon.store.close()
        log.info("edged stopped")
