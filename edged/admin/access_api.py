"""Admin API for the access model: people (bulk upsert, delete), documents, modes.

Reads use the daemon's read connection; writes need the admin token and run on a connection of
their own in a worker thread, so a large import never stalls the terminals' requests (SQLite's
WAL lets decisions read while an import writes).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edged.access import model as access
from edged.access import modes, people
from edged.access.faces import FaceStore
from edged.admin import params
from edged.config import Config
from edged.decide.policy import SITE
from edged.doors import automation
from edged.doors.control import Doors
from edged.errors import ImportFileError, ModeError, StoreError
from edged.receive.receiver import json_response
from edged.store import events as store

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_PAGE = 1000


class AdminState(Protocol):
    """What these endpoints need of the admin API's state (edged/admin/app.py, Admin)."""

    @property
    def cfg(self) -> Config:
        """The running configuration (a reload replaces it)."""

    @property
    def store(self) -> store.Store:
        """The daemon's store: its read connection and its file."""

    @property
    def doors(self) -> Doors | None:
        """The site's doors, when any are configured."""

    def authorised(self, request: Request) -> Response | None:
        """None when the request may write, else the refusal."""

    def actor(self, request: Request, given: object, default: str) -> str:
        """Who a write is audited as (a web session's user, else ``given`` or ``default``)."""


def _error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"code": status, "msg": message, **extra}, status)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name) in ("1", "true", "yes")


LARGE_BODY = 256 * 1024  # bytes of JSON parsed in a worker thread, not on the event loop


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        if len(raw) > LARGE_BODY:  # a people document: parsed off the event loop
            return await asyncio.to_thread(params.load_json, raw)
        return params.load_json(raw)
    except ValueError as exc:
        raise ImportFileError([str(exc)]) from None


async def _write_body(admin: AdminState, request: Request) -> Any:
    """The JSON body of an authorised write, or the Response refusing it."""
    refused = admin.authorised(request)
    if refused:
        return refused
    try:
        return await _body(request)
    except ImportFileError as exc:
        return _error(400, exc.problems[0])


async def write(admin: AdminState, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` on a connection of its own in a worker thread (admin writes, the page's)."""

    def run() -> T:
        conn = store.connect(admin.store.path)
        try:
            return work(conn)
        finally:
            conn.close()

    return await run_in_threadpool(run)


class Manage:
    """The access-model endpoints of the admin API."""

    def __init__(self, admin: AdminState) -> None:
        self.admin = admin
        self.tz = ZoneInfo(admin.cfg.site.timezone)
        self.faces = FaceStore(admin.cfg.storage.faces_path)

    @property
    def reader(self) -> sqlite3.Connection:
        """The daemon's read connection, for the access package's reads."""
        return self.admin.store.reader

    async def upsert(self, request: Request) -> Response:
        """POST /api/v1/people: a list of people or a document; ?replace, ?dry_run."""
        body = await _write_body(self.admin, request)
        if isinstance(body, Response):
            return body
        replace, dry_run = _flag(request, "replace"), _flag(request, "dry_run")
        try:
            doc = people.parse_document(body, self.tz)
            results = await write(
                self.admin, lambda c: people.apply_document(c, doc, replace, dry_run, self.faces)
            )
        except ImportFileError as exc:
            return _error(422, "no change made", errors=exc.problems)
        except StoreError as exc:
            return _error(503, str(exc))
        sections = {name: asdict(result) for name, result in results.items()}
        flat = sections.get("people", asdict(people.ImportResult()))
        return json_response({"code": 200, "dry_run": dry_run, **flat, "sections": sections})

    async def delete_many(self, request: Request) -> Response:
        """DELETE /api/v1/people with ``{"ids": [...]}``; ?dry_run."""
        body = await _write_body(self.admin, request)
        if isinstance(body, Response):
            return body
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _error(400, 'expected {"ids": ["person id", ...]}')
        dry_run = _flag(request, "dry_run")
        gone = await write(self.admin, lambda c: people.remove(c, ids, dry_run, self.faces))
        missing = [i for i in ids if i not in gone]
        return json_response({"code": 200, "dry_run": dry_run, "removed": gone, "missing": missing})

    async def delete_one(self, request: Request) -> Response:
        """DELETE /api/v1/people/{person_id}."""
        refused = self.admin.authorised(request)
        if refused:
            return refused
        pid = request.path_params["person_id"]
        gone = await write(self.admin, lambda c: people.remove(c, [pid], faces=self.faces))
        if not gone:
            return _error(404, f"no person {pid!r}")
        return json_response({"code": 200, "removed": gone})

    async def list(self, request: Request) -> Response:
        """GET /api/v1/people?group=&after=&limit=: people in id order, paged."""
        q = request.query_params
        try:
            limit = min(params.strict_int(q.get("limit", "100"), "limit"), MAX_PAGE)
        except ValueError as exc:
            return _error(400, str(exc))
        if limit < 1:
            return _error(400, "limit must be 1 or more")
        rows = people.listing(self.reader, q.get("group"), limit, q.get("after", ""))
        after = rows[-1]["id"] if len(rows) == limit else None
        return json_response({"people": rows, "next_after": after})

    async def show(self, request: Request) -> Response:
        """GET /api/v1/people/{person_id}: one person with groups and credentials (masked)."""
        pid = request.path_params["person_id"]
        person = people.show(self.reader, pid, self.tz, self.faces)
        if person is None:
            return _error(404, f"no person {pid!r}")
        for column in people.CREDENTIAL_COLUMNS:
            if column != "user_id":
                person[column] = [people.mask(v) for v in person[column]]
        return json_response(person)

    async def export(self, request: Request) -> Response:
        """GET /api/v1/export: the whole access model as an importable document (token)."""
        refused = self.admin.authorised(request)  # it holds every credential in clear
        if refused:
            return refused
        return json_response(people.export(self.reader, self.tz, self.faces))

    async def modes(self, request: Request) -> Response:
        """GET /api/v1/modes: modes in force and the latest switches."""
        return json_response(
            {"modes": modes.current(self.reader), "changes": modes.changes(self.reader)}
        )

    async def switch(self, request: Request) -> Response:
        """POST /api/v1/modes ``{mode, on, door?, override_group?, schedule?, by?}``."""
        body = await _write_body(self.admin, request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict) or not isinstance(body.get("on"), bool):
            return _error(400, 'expected {"mode": "lockdown"|"free_access", "on": true|false}')
        by = self.admin.actor(request, body.get("by"), "admin-api")
        scope = str(body.get("door") or SITE)
        try:
            mode = await write(
                self.admin,
                lambda c: modes.switch(
                    c,
                    scope,
                    body.get("mode"),  # type: ignore[arg-type]
                    body["on"],
                    by,
                    group=body.get("override_group"),
                    schedule=body.get("schedule"),
                    doors=access.door_names(self.admin.cfg),
                ),
            )
        except ModeError as exc:
            return _error(422, str(exc))
        self.reach_doors()
        return json_response({"code": 200, "mode": asdict(mode)})

    def reach_doors(self) -> None:
        """Bring the doors to the modes just switched, before the answer (doors/automation.py)."""
        if self.admin.doors is None:
            return
        try:
            automation.sync(self.admin.doors, self.reader, self.tz, time.time())
        except sqlite3.Error as exc:  # stored; the modes loop applies it when reads work again
            log.error("modes: switched, but cannot read them back for the doors: %s", exc)


def routes(admin: AdminState) -> list[Route]:
    """The routes to add to the admin app."""
    m = Manage(admin)
    return [
        Route("/api/v1/people", m.list, methods=["GET"]),
        Route("/api/v1/people", m.delete_many, methods=["DELETE"]),
        Route("/api/v1/people/{person_id}", m.show, methods=["GET"]),
        Route("/api/v1/people/{person_id}", m.delete_one, methods=["DELETE"]),
        Route("/api/v1/export", m.export, methods=["GET"]),
        Route("/api/v1/modes", m.modes, methods=["GET"]),
        Route("/api/v1/modes", m.switch, methods=["POST"]),
    ]
