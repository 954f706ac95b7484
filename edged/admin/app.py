"""The operators' side: health, readiness, events and people, on its own listener.

Reads are open to whoever can reach the listener (loopback by default); every write needs
``Authorization: Bearer <admin token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from edged import config
from edged.access import terminalstate
from edged.admin import access_api, metrics, params
from edged.config import Config
from edged.decide import explain
from edged.doors.control import Doors
from edged.errors import DoorError
from edged.hooks import Check
from edged.receive.receiver import Receiver, json_response
from edged.store import doorlog, export, queries, readonly, snapshots
from edged.store.eventjson import EVENT_COLUMNS, event_json
from edged.store.eventjson import iso as _iso
from edged.terminals.reconciler import Reconcilers
from edged.upstream.feature import Upstream

log = logging.getLogger(__name__)

MAX_PAGE = 1000


def parse_since(text: str) -> float:
    """Epoch seconds, or an ISO 8601 date-time (UTC unless it carries an offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class Admin:
    """State shared by the admin endpoints."""

    def __init__(
        self,
        cfg: Config,
        receiver: Receiver,
        token: str,
        *,
        checks: Iterable[Check] = (),
        doors: Doors | None = None,
        upstream: Upstream | None = None,
        reconcilers: Reconcilers | None = None,
        session: Callable[[Request], str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.receiver = receiver
        self.store = receiver.store
        self.token = token
        self.checks = list(checks)  # /readyz entries after the store's (edged/hooks.py)
        self.doors = doors  # when doors, a siren or a fire input are configured
        self.upstream = upstream  # when [upstream] is enabled
        self.reconcilers = reconcilers  # when a terminal is managed (has a host)
        # when [web] is enabled: who a request acts for by its login session, e.g. "web:ann"
        # (edged/web/sessions.py); the bearer token works alongside
        self.session = session

    def reconfigure(self, cfg: Config) -> None:
        """Take a reloaded configuration and the admin token it names."""
        self.cfg = cfg
        self.token = config.admin_token(cfg)

    def authorised(self, request: Request) -> Response | None:
        """None when the request may write (the bearer token, or a web session), else the
        refusal."""
        if self.session is not None and self.session(request) is not None:
            return None
        if not self.token:
            return _error(403, "writes are disabled: no admin token is configured")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), self.token):
            return _error(401, "a valid 'Authorization: Bearer <token>' is required")
        return None

    def actor(self, request: Request, given: object, default: str) -> str:
        """Who a write is audited as: the web session's ``web:NAME``, else what the caller
        says (``source`` / ``by``) or ``default``."""
        if self.session is not None:
            who = self.session(request)
            if who is not None:
                return who
        return given if isinstance(given, str) and given else default

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        checks: dict[str, Any] = {}
        ok = True
        stats = self.store.stats
        store_ok = self.store.healthy()
        checks["store"] = {
            "ok": store_ok,
            "last_error": stats.last_error,
            "records": stats.records,
            "duplicates": stats.duplicates,
            "commits": stats.commits,
            "pending": stats.pending_items,
            "images_bytes": stats.images_bytes,
            "images_failed": stats.images_failed,
        }
        ok = ok and store_ok
        for check in self.checks:
            name, check_ok, detail = check()
            checks[name] = {"ok": check_ok, **(detail if isinstance(detail, dict) else {})}
            ok = ok and check_ok
        checks["receiver"] = {
            "answered": dict(self.receiver.stats.answered),
            "rejected": dict(self.receiver.stats.rejected),
            # an alarm for the operator, not a readiness failure (docs/receiver.md)
            "malformed": self.store.malformed(),
        }
        # forged requests (edged/receive/binding.py): an alarm to show, not a reason to stop serving
        checks["binding"] = self.receiver.binding.alarm()
        return json_response({"ready": ok, "checks": checks}, 200 if ok else 503)

    def counted(self, event: dict[str, Any]) -> dict[str, Any]:
        """An event with the duplicates the store counted in memory and has not written yet."""
        event["duplicates"] += self.store.unwritten_duplicates(event["id"])
        return event

    async def events(self, request: Request) -> Response:
        q = request.query_params
        try:
            since = _param(q, "since", parse_since) if "since" in q else None
            after = _int_param(q, "after", "0")
            limit = min(_int_param(q, "limit", "100"), MAX_PAGE)
        except ValueError as exc:
            return _error(400, str(exc))
        if limit < 1:
            return _error(400, "limit: must be 1 or more")
        equal = {
            column: q[param]
            for param, column in (
                ("terminal", "terminal"),
                ("serial", "serial"),
                ("person", "person_id"),
                ("decision", "decision"),
                ("kind", "kind"),
                ("reason", "reason"),
            )
            if param in q
        }
        rows = queries.events_after(self.store.reader, EVENT_COLUMNS, after, limit, equal, since)
        events = [self.counted(event_json(r)) for r in rows]
        next_after = events[-1]["id"] if len(events) == limit else None
        last = events[-1]["id"] if events else after
        return json_response({"events": events, "next_after": next_after, "last_id": last})

    async def export_events(self, request: Request) -> Response:
        """GET /api/v1/events.csv and .jsonl: the audit export, streamed (edged/store/export.py).

        Behind the token, as snapshots are: it is everyone's comings and goings at once.
        """
        refused = self.authorised(request)
        if refused is not None:
            return refused
        fmt = request.url.path.rsplit(".", 1)[-1]
        q = request.query_params
        try:
            query = readonly.EventQuery(
                since=_param(q, "since", parse_since) if "since" in q else None,
                until=_param(q, "until", parse_since) if "until" in q else None,
                terminal=q.get("terminal"),
                person=q.get("person"),
                decision=q.get("decision"),
            )
        except ValueError as exc:
            return _error(400, str(exc))
        # a connection of its own, read in the server's worker threads one page at a time
        rows = export.events_from_file(self.store.path, query)
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        headers = {
            "content-disposition": f'attachment; filename="edged-events.{fmt}"',
            "cache-control": "no-store",
        }
        return StreamingResponse(export.lines(fmt, rows), media_type=media, headers=headers)

    async def event(self, request: Request) -> Response:
        try:
            event_id = params.strict_int(request.path_params["event_id"], "event id")
        except ValueError as exc:
            return _error(400, str(exc))
        row = queries.event(self.store.reader, f"{EVENT_COLUMNS}, raw, response, explain", event_id)
        if row is None:
            return _error(404, f"no event {event_id}")
        out = self.counted(event_json(row, with_raw=True))
        out["explain"] = explain.steps(out["explain"])
        return json_response(out)

    async def snapshot(self, request: Request) -> Response:
        """An event's snapshot as ``image/jpeg``; behind the token (it shows a person's face)."""
        refused = self.authorised(request)
        if refused is not None:
            return refused
        try:
            event_id = params.strict_int(request.path_params["event_id"], "event id")
        except ValueError as exc:
            return _error(400, str(exc))
        row = queries.snapshot_place(self.store.reader, event_id)
        if row is None:
            return _error(404, f"no event {event_id}")
        data = await asyncio.to_thread(self._read_snapshot, row)
        if data is None:
            return _error(404, f"event {event_id} has no snapshot (none sent, or pruned)")
        return Response(data, media_type="image/jpeg", headers={"cache-control": "no-store"})

    def _read_snapshot(self, row: Any) -> bytes | None:
        root = self.store.images_dir
        if row["image_path"] is None or root is None:
            return None
        self.store.sync_files(2.0)  # a snapshot follows its commit by a moment
        return snapshots.read(root, row["image_path"], row["image_offset"], row["image_bytes"])

    async def terminals(self, request: Request) -> Response:
        return json_response({"terminals": self.terminal_list()})

    def terminal_list(self) -> list[dict[str, Any]]:
        """Every configured or heard-from terminal: address, last push, reconciler health."""
        out = []
        configured = {t.serial: t for t in self.cfg.terminals}
        serials = list(configured) + [s for s in self.receiver.seen if s not in configured]
        health = self.reconcilers.health() if self.reconcilers is not None else {}
        for serial in serials:
            seen = self.receiver.seen.get(serial)
            term = configured.get(serial)
            entry: dict[str, Any] = {
                "name": term.name if term else None,
                "serial": serial,
                "configured": term is not None,
                "managed": serial in health,
                "address": seen.address if seen else None,
                "last_push": _iso(seen.last_push) if seen else None,
                "last_heartbeat": _iso(seen.last_heartbeat) if seen else None,
            }
            entry.update(_terminal_health(health.get(serial)))
            entry["people"] = terminalstate.summary(self.store.reader, serial)  # people sync
            out.append(entry)
        return out

    async def resubscribe_terminals(self, request: Request) -> Response:
        refused = self.authorised(request)
        if refused:
            return refused
        if self.reconcilers is None:
            return _error(503, "no terminal is managed (none has a host)")
        try:
            body = params.load_json(await request.body() or b"{}")
        except ValueError as exc:
            return _error(400, str(exc))
        name = body.get("name") if isinstance(body, dict) else None
        try:
            names = self.reconcilers.resubscribe(name or None)
        except KeyError:
            return _error(404, f"no managed terminal named {name!r}")
        client = request.client.host if request.client else "?"
        log.info(
            "terminals: re-registration of %s asked by %s@%s",
            ", ".join(names) or "none",
            self.actor(request, body.get("by") if isinstance(body, dict) else None, "admin"),
            client,
        )
        return json_response({"code": 200, "terminals": names})

    async def import_people(self, request: Request) -> Response:
        """POST /api/v1/people: bulk upsert of people, or a whole document (admin/access_api.py)."""
        return await access_api.Manage(self).upsert(request)

    # ----- doors ----------------------------------------------------------------------------

    async def doors_state(self, request: Request) -> Response:
        if self.doors is None:
            return json_response({"doors": [], "fire": False, "lockdown": False, "siren": False})
        return json_response(self.doors.status())

    async def door_command(self, request: Request) -> Response:
        refused = self.authorised(request)
        if refused:
            return refused
        if self.doors is None:
            return _error(404, "no doors are configured")
        try:
            raw = await request.body()
            body = params.load_json(raw) if raw.strip() else {}
        except ValueError as exc:
            return _error(400, str(exc))
        given = body.get("source") if isinstance(body, dict) else None
        client = request.client.host if request.client else "?"
        source = f"{self.actor(request, given, 'admin')}@{client}"[:120]
        name, action = request.path_params["door"], request.path_params["action"]
        if action not in ("open", "hold", "release", "lock"):
            return _error(400, f"unknown door command {action!r}: open, hold, release or lock")
        try:
            state = self.doors.command(name, action, source)
        except DoorError as exc:
            status = 404 if name not in self.doors.doors else 409
            return _error(status, str(exc))
        return json_response({"code": 200, "door": state})

    async def door_log(self, request: Request) -> Response:
        q = request.query_params
        try:
            after = _int_param(q, "after", "0")
            limit = min(_int_param(q, "limit", "100"), MAX_PAGE)
        except ValueError as exc:
            return _error(400, str(exc))
        rows = doorlog.page(self.store.reader, after, q.get("door"), max(limit, 1))
        entries = [
            {**dict(r), "at": _iso(r["at"]), "detail": json.loads(r["detail"])} for r in rows
        ]
        last = entries[-1]["id"] if entries else after
        return json_response({"entries": entries, "last_id": last})

    async def outbox(self, request: Request) -> Response:
        """Records not yet acknowledged by the upstream (edged/upstream/outbox.py)."""
        if self.upstream is None or self.upstream.forwarder is None:
            return json_response({"enabled": False, "depth": None})
        return json_response(self.upstream.forwarder.status(time.time()))

    async def upstream_status(self, request: Request) -> Response:
        """Upstream decisions, outbox and people sync (edged/upstream/client.py)."""
        if self.upstream is None:
            return json_response({"enabled": False})
        return json_response({"enabled": True, **self.upstream.status()})


def _param(query: Any, name: str, parse: Callable[[str], Any], default: str = "") -> Any:
    text = query.get(name, default)
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not valid") from None


def _int_param(query: Any, name: str, default: str) -> int:
    """A query parameter that must be a 64-bit integer (``ValueError`` naming it)."""
    return params.strict_int(query.get(name, default), name)


def _terminal_health(health: dict[str, Any] | None) -> dict[str, Any]:
    """The reconciler's view of a managed terminal, times as ISO strings."""
    if health is None:
        return {}
    out = {k: v for k, v in health.items() if k not in ("name", "serial")}
    for key in ("last_ok", "last_attempt", "since"):
        out[key] = _iso(out.get(key))
    for part, keys in (
        ("clock", ("measured_at", "last_set")),
        ("settings", ("last_write", "last_check")),
    ):
        if isinstance(out.get(part), dict):
            out[part] = {**out[part], **{k: _iso(out[part].get(k)) for k in keys}}
    return out


def _error(status: int, message: str) -> Response:
    return json_response({"code": status, "msg": message}, status)


def create_app(admin: Admin, pages: Iterable[BaseRoute] = ()) -> Starlette:
    """The admin ASGI app; ``pages`` (the web page's routes, edged/web/pages.py) first."""
    routes = [
        *pages,
        Route("/healthz", admin.healthz),
        Route("/readyz", admin.readyz),
        Route("/metrics", metrics.endpoint(metrics.registry(admin))),
        Route("/api/v1/events", admin.events),
        Route("/api/v1/events.csv", admin.export_events),
        Route("/api/v1/events.jsonl", admin.export_events),
        Route("/api/v1/events/{event_id}", admin.event),
        Route("/api/v1/events/{event_id}/snapshot", admin.snapshot),
        Route("/api/v1/terminals", admin.terminals),
        Route("/api/v1/terminals/resubscribe", admin.resubscribe_terminals, methods=["POST"]),
        Route("/api/v1/people", admin.import_people, methods=["POST"]),
        Route("/api/v1/doors", admin.doors_state),
        Route("/api/v1/doors/log", admin.door_log),
        Route("/api/v1/doors/{door}/{action}", admin.door_command, methods=["POST"]),
        *access_api.routes(admin),  # people list/show/delete, export, modes
        Route("/api/v1/outbox", admin.outbox),
        Route("/api/v1/upstream", admin.upstream_status),
    ]
    app = Starlette(routes=routes)
    app.state.admin = admin
    return app
