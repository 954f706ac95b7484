"""The one place the daemon is assembled: every part built with what it needs, in order.

Each part gets its collaborators through its constructor; nothing is assigned into another
object afterwards. A feature (the doors, the upstream, the managed terminals) is built first
and hands back its :class:`~edged.hooks.Hooks` (services, readiness checks, record listeners),
which go to the part that runs them: listeners to the receiver, checks to the admin API,
services to the daemon. What is opened (the store, the listening sockets, the door outputs)
is entered in one ``ExitStack``: a failure part-way closes what was opened, in reverse order,
and a daemon that was built closes it all with :meth:`Daemon.close`.

The order follows what each part needs: the store; the sockets (a bind error before any
output is claimed); what the receiver last heard from each terminal (shared with the
reconcilers); the reconcilers (the doors open a terminal's relay through them); the doors;
the upstream; the web page's live streams and sessions (when ``[web]`` is enabled: a record
listener, and what the admin API accepts beside its token); then the receiver, the admin API,
the web page over it and the daemon that serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from edged import config
from edged.admin.app import Admin
from edged.doors import automation
from edged.doors import control as doors
from edged.hooks import Hooks
from edged.mqtt.feature import Mqtt
from edged.ops import clockcheck
from edged.ops import daemon as serving
from edged.ops.daemon import Daemon
from edged.receive.receiver import Receiver
from edged.store import mqttstate
from edged.store.events import Store
from edged.terminals.peoplesync import PeopleSyncs
from edged.terminals.reconciler import Reconcilers
from edged.upstream import client as upstream
from edged.upstream import outbox
from edged.upstream.feature import Upstream
from edged.web import live as web_live
from edged.web.pages import Web
from edged.web.sessions import Sessions


def build(cfg: config.Config) -> Daemon:
    """Open the state, build every part and bind the listeners; a clear EdgedError on failure."""
    token = config.admin_token(cfg)
    upstream.preflight(cfg)  # upstream token and CA files, before anything is opened
    forwarding = cfg.upstream.enabled and bool(cfg.upstream.forward_url)
    with contextlib.ExitStack() as opened:
        store = Store(
            cfg.storage.database_path,
            cfg.storage.images_path if cfg.storage.store_images else None,
            cfg.storage.images_max_bytes,
            # keep what is not forwarded, nor published to the broker
            prune_limit=_prune_limit(forwarding, cfg.mqtt.enabled),
        )
        opened.callback(store.close)
        receiver_sockets = [_listen(opened, a) for a in cfg.receiver.listen]
        admin_sockets = [_listen(opened, a) for a in cfg.admin.listen]
        seen = Receiver.load_seen(store)
        people_syncs = PeopleSyncs(cfg, store)  # with [people_sync] enabled
        managed = Reconcilers(
            cfg, store, seen, plausible=clockcheck.plausible, on_reconciled=people_syncs.trigger
        )
        reconcilers = managed if managed.items else None
        # doors: outputs claimed at their locked level before serving
        site = doors.build(cfg, store, relay=reconcilers.open_door if reconcilers else None)
        if site is not None:
            opened.callback(site.close)
        up = Upstream(cfg, store) if cfg.upstream.enabled else None
        broker = (
            Mqtt(
                cfg,
                store,
                doors=site,
                seen=seen,
                health=reconcilers.health if reconcilers is not None else None,
            )
            if cfg.mqtt.enabled
            else None
        )
        # the web page (when [web] is enabled): its live stream is a record listener and ends
        # when the daemon stops; its sessions are what the admin API accepts besides the token
        stopping = asyncio.Event()
        live = web_live.Live(stopping) if cfg.web.enabled else None
        sessions = Sessions(cfg) if cfg.web.enabled else None
        hooks = Hooks.merge(
            [
                _door_hooks(cfg, store, site),
                up.hooks() if up is not None else Hooks(),
                reconcilers.hooks() if reconcilers is not None else Hooks(),
                broker.hooks() if broker is not None else Hooks(),
                Hooks(services=(live.run,), listeners=(live.on_record,)) if live else Hooks(),
                people_syncs.hooks(),
            ]
        )
        recv = Receiver(
            cfg,
            store,
            authority=up.authority if up is not None else None,
            listeners=hooks.listeners,
            seen=seen,
        )
        admin = Admin(
            cfg,
            recv,
            token,
            checks=(clockcheck.readiness, *hooks.checks),
            doors=site,
            upstream=up,
            reconcilers=reconcilers,
            session=sessions.who if sessions is not None else None,
        )
        web = Web(admin, sessions, live) if sessions is not None and live is not None else None
        daemon = Daemon(
            cfg,
            store,
            recv,
            admin,
            receiver_sockets,
            admin_sockets,
            services=list(hooks.services),
            doors=site,
            reconcilers=reconcilers,
            web=web,
            resources=opened.pop_all(),
            stopping=stopping,
            reloaders=[
                recv.reconfigure,
                admin.reconfigure,
                *([broker.reconfigure] if broker is not None else []),
                *([sessions.reconfigure] if sessions is not None else []),
            ],
        )
    return daemon


async def run(cfg: config.Config) -> None:
    """Build the daemon and run it until SIGTERM or SIGINT (``edged run``)."""
    clockcheck.report(time.time())
    await serving.run(build(cfg))


def _listen(opened: contextlib.ExitStack, address: str) -> socket.socket:
    """A bound listener, closed with the rest of what was opened."""
    return opened.enter_context(contextlib.closing(serving.bind(address)))


def _door_hooks(cfg: config.Config, store: Store, site: doors.Doors | None) -> Hooks:
    """The doors' listener, /readyz entry and services: their inputs, and the modes loop."""
    if site is None:
        return Hooks()
    tz = ZoneInfo(cfg.site.timezone)

    async def modes() -> None:
        await automation.run(site, store.reader, tz)

    return Hooks(
        services=(site.service, modes),  # the service attaches; at stop every lock is locked
        checks=(site.readiness,),
        listeners=(site.on_record,),
    )


def _prune_limit(forwarding: bool, publishing: bool) -> Callable[[sqlite3.Connection], int] | None:
    """Retention's limit: the lowest cursor of the upstream outbox and the MQTT publisher."""
    cursors = [c for c, on in ((outbox.cursor, forwarding), (mqttstate.cursor, publishing)) if on]
    if not cursors:
        return None
    if len(cursors) == 1:
        return cursors[0]
    return lambda conn: min(c(conn) for c in cursors)
