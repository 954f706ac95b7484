"""The simulated terminal's people endpoints: users, groups, rules and datasync (``/v1``, ``/v2``).

The library itself (limits, codes, the local decision) is ``edged.sim.library``; this module
turns requests into its calls and its refusals into answers: HTTP 200 with the business ``code``,
and in a batch (``POST/DELETE /v2/user|group|rule``) one entry in ``data.errors`` per refused
item (``{"id", "code", "msg"}``) while the others are written. ``/v2/...`` is 404 before firmware
1.2.1 (edged/sim/api.py answers that before a handler runs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from edged.clock import Clock
from edged.sim.library import Library, LibraryError

MAX_OFFSET = 100_000
MAX_LIMIT = 100
KINDS = {"user": "users", "group": "groups", "rule": "rules"}


class Holder(Protocol):
    """What these endpoints need of the terminal: its library and clock."""

    library: Library
    clock: Clock


def _answer(data: Any = None, code: int = 200, msg: str = "OK") -> Response:
    body = json.dumps({"code": code, "msg": msg, "data": data}, ensure_ascii=False)
    return Response(body, 200, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _now_ms(sim: Holder) -> int:
    return int(sim.clock.time() * 1000)


def _put(sim: Holder, kind: str, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise LibraryError(400, "expected an object")
    put = {"user": sim.library.put_user, "group": sim.library.put_group}.get(
        kind, sim.library.put_rule
    )
    return put(item, _now_ms(sim))


def _delete(sim: Holder, kind: str, key: str) -> None:
    delete = {"user": sim.library.delete_user, "group": sim.library.delete_group}.get(
        kind, sim.library.delete_rule
    )
    delete(key)


async def create(sim: Holder, kind: str, request: Request) -> Response:
    """POST /v1/<kind>: create or replace one."""
    try:
        item = _put(sim, kind, await _body(request))
    except LibraryError as exc:
        return _answer(None, exc.code, exc.msg)
    return _answer(sim.library.shown(item) if kind == "user" else item)


async def batch_create(sim: Holder, kind: str, request: Request) -> Response:
    """POST /v2/<kind> ``{<kind>_list: [...]}``: each item on its own; errors listed."""
    items = (await _body(request)).get(f"{kind}_list")
    if not isinstance(items, list):
        return _answer(None, 400, f"{kind}_list must be a list")
    errors = []
    for item in items:
        try:
            _put(sim, kind, item)
        except LibraryError as exc:
            key = item.get(f"{kind}_id") if isinstance(item, dict) else None
            errors.append({"id": key, "code": exc.code, "msg": exc.msg})
    return _answer({"errors": errors})


async def batch_delete(sim: Holder, kind: str, request: Request) -> Response:
    """DELETE /v2/<kind> ``{ids: [...]}``: each on its own; errors listed."""
    ids = (await _body(request)).get("ids")
    if not isinstance(ids, list):
        return _answer(None, 400, "ids must be a list")
    errors = []
    for key in ids:
        try:
            _delete(sim, kind, str(key))
        except LibraryError as exc:
            errors.append({"id": key, "code": exc.code, "msg": exc.msg})
    return _answer({"errors": errors})


async def one(sim: Holder, kind: str, request: Request, key: str) -> Response:
    """GET or DELETE /v1/<kind>/id/{id}."""
    table = getattr(sim.library, KINDS[kind])
    if request.method == "GET":
        found = table.get(key)
        if found is None:
            return _answer(None, 404, f"no {kind} {key}")
        return _answer(sim.library.shown(found) if kind == "user" else found)
    try:
        _delete(sim, kind, key)
    except LibraryError as exc:
        return _answer(None, exc.code, exc.msg)
    return _answer(None)


async def page(sim: Holder, kind: str, request: Request, offset: int, limit: int) -> Response:
    """GET /v1/<kind>/offset/{offset}/limit/{limit}: in id order."""
    if not 0 <= offset <= MAX_OFFSET or not 0 <= limit <= MAX_LIMIT:
        return _answer(None, 400, f"offset 0..{MAX_OFFSET}, limit 0..{MAX_LIMIT}")
    table = getattr(sim.library, KINDS[kind])
    keys = sorted(table)
    items = [table[k] for k in keys[offset : offset + limit]]
    if kind == "user":
        items = [sim.library.shown(i) for i in items]
    data = {"offset": offset, "limit": limit, "count": len(items), "total": len(keys)}
    return _answer({**data, "items": items})


async def datasync_info(sim: Holder, request: Request) -> Response:
    """GET /v2/datasync/info."""
    return _answer(sim.library.info())


async def datasync_clear(sim: Holder, request: Request) -> Response:
    """GET /v2/datasync/clear: users, groups and rules wiped."""
    sim.library.clear()
    return _answer(None)


Handler = Callable[[Request], Awaitable[Response]]
_ONE = re.compile(r"/v1/(user|group|rule)/id/([^/]+)")
_PAGE = re.compile(r"/v1/(user|group|rule)/offset/(\d+)/limit/(\d+)")
_KIND = re.compile(r"/v([12])/(user|group|rule)/?")
METHODS = ["GET", "POST", "DELETE"]


def find(sim: Holder, method: str, path: str) -> Handler | None:
    """The handler for a people request, or None when the path is not one of these."""
    if method == "GET" and path == "/v2/datasync/info":
        return lambda r: datasync_info(sim, r)
    if method == "GET" and path == "/v2/datasync/clear":
        return lambda r: datasync_clear(sim, r)
    match = _ONE.fullmatch(path)
    if match and method in ("GET", "DELETE"):
        kind, key = match.groups()
        return lambda r: one(sim, kind, r, key)
    match = _PAGE.fullmatch(path)
    if match and method == "GET":
        kind, offset, limit = match.group(1), int(match.group(2)), int(match.group(3))
        return lambda r: page(sim, kind, r, offset, limit)
    match = _KIND.fullmatch(path)
    if match is None:
        return None
    version, kind = match.groups()
    if version == "1" and method == "POST":
        return lambda r: create(sim, kind, r)
    if version == "2" and method == "POST":
        return lambda r: batch_create(sim, kind, r)
    if version == "2" and method == "DELETE":
        return lambda r: batch_delete(sim, kind, r)
    return None
