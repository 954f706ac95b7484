"""The web page: server-rendered Jinja2 pages under ``/ui/`` on the admin listener.

Every page but the login needs a session (edged/web/sessions.py); a browser without one is sent
to ``/ui/login``. The pages read what the admin API reads (the same ``Admin`` state and the
store's read connection); the actions on them (doors, modes, terminals) are the admin API's own
endpoints, called by ``static/edged.js`` with the session cookie and its CSRF token, so they are
audited the same way, as ``web:NAME``. The live list is a server-sent-events stream
(edged/web/live.py). Templates are rendered here with Jinja2 (autoescaped), not through
starlette's template helper, whose signature differs between the starlette releases edged runs
on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from edged import __version__
from edged.access import importfile, people
from edged.access import model as access
from edged.access.faces import FaceStore
from edged.admin import access_api
from edged.admin.app import Admin
from edged.decide import explain
from edged.errors import ImportFileError, NotFoundError, StoreError
from edged.store import events as store
from edged.store import queries, readonly
from edged.store.eventjson import EVENT_COLUMNS, event_json
from edged.terminals import client as terminal_client
from edged.terminals import tlspin
from edged.web import live as livemod
from edged.web.sessions import (
    COOKIE,
    Session,
    Sessions,
    TooManyAttempts,
    cookie_header,
    over_tls,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MAX_FORM = 64 * 1024  # a login or logout form
MAX_IMPORT = 16 * 1024 * 1024  # a people document pasted or loaded into the import form
RECENT = 50  # events listed on the events page before the live ones
STATIC = {"edged.css": "text/css", "edged.js": "text/javascript"}
# No framing (clickjacking a door button), no other origin's scripts, no referrer to leak ids.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


async def _form(request: Request, limit: int) -> dict[str, str]:
    """An urlencoded form body (first value of each field); ValueError past ``limit`` bytes."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise ValueError(f"the form is larger than {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the form is not UTF-8") from None
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=50)
    except ValueError:
        raise ValueError("the form has too many fields") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def _next_path(value: str | None) -> str:
    """Where to go after the login: a path of this site under /ui/, nothing else."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


class Web:
    """The pages and the live stream, over the admin state."""

    def __init__(self, admin: Admin, sessions: Sessions, live: livemod.Live) -> None:
        self.admin = admin
        self.sessions = sessions
        self.live = live
        self.faces = FaceStore(admin.cfg.storage.faces_path)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # ----- rendering -----------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> Response:
        html = self.env.get_template(template).render(
            site=self.admin.cfg.site.name,
            version=__version__,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            path=request.url.path,
            **ctx,
        )
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    def _login_redirect(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = urllib.parse.urlencode({"next": target})
        return RedirectResponse(f"/ui/login?{query}", 303, headers=SECURITY_HEADERS)

    # ----- login ---------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if self.sessions.get(request) is not None:
            return RedirectResponse(_next_path(request.query_params.get("next")), 303)
        return self.render(
            request,
            "login.html",
            None,
            next=_next_path(request.query_params.get("next")),
            error=None,
            accounts=self.sessions.accounts.any(),
        )

    async def login(self, request: Request) -> Response:
        try:
            form = await _form(request, MAX_FORM)
        except ValueError as exc:
            return self._login_error(request, str(exc), 400, "/ui/")
        target = _next_path(form.get("next"))
        address = request.client.host if request.client else "?"
        try:
            session = await self.sessions.login(
                form.get("name", ""), form.get("password", ""), address
            )
        except TooManyAttempts:
            return self._login_error(
                request, "too many failed logins: wait a minute and try again", 429, target
            )
        if session is None:
            return self._login_error(request, "wrong name or password", 401, target)
        reply = RedirectResponse(target, 303, headers=SECURITY_HEADERS)
        reply.headers.append("set-cookie", cookie_header(session.id, over_tls(request)))
        return reply

    def _login_error(self, request: Request, message: str, status: int, target: str) -> Response:
        return self.render(
            request,
            "login.html",
            None,
            status,
            next=target,
            error=message,
            accounts=self.sessions.accounts.any(),
        )

    async def logout(self, request: Request) -> Response:
        session = self.sessions.get(request)
        try:
            form = await _form(request, MAX_FORM)
        except ValueError:
            form = {}
        if session is not None and not self.sessions.csrf_ok(request, session, form.get("csrf")):
            return HTMLResponse("missing or wrong CSRF token", 403, headers=SECURITY_HEADERS)
        self.sessions.logout(request)
        reply = RedirectResponse("/ui/login", 303, headers=SECURITY_HEADERS)
        reply.headers.append("set-cookie", cookie_header("", over_tls(request), max_age=0))
        return reply

    # ----- pages ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The doors' and the site's state: the overview's top and the stream's ``state``."""
        adm = self.admin
        doors = adm.doors.status() if adm.doors is not None else {"doors": []}
        modes = readonly.site_modes(adm.store.reader)
        return {
            "doors": [
                {
                    "name": d["name"],
                    "locked": d["locked"],
                    "why": d["why"],
                    "contact": d["contact"],
                    "holds": sorted(d["holds"]),
                    "alarms": sorted({a["kind"] for a in d["alarms"]}),
                    "last_decision": d["last_decision"],
                }
                for d in doors["doors"]
            ],
            "lockdown": modes["lockdown"] or bool(doors.get("lockdown")),
            "free_access": modes["free_access"],
            "fire": bool(doors.get("fire")),
            "siren": bool(doors.get("siren")),
        }

    def readiness(self) -> tuple[bool, list[dict[str, Any]]]:
        """/readyz's checks, without its counts of stored records."""
        adm = self.admin
        stats = adm.store.stats
        entries = [
            {
                "name": "store",
                "ok": adm.store.healthy(),
                "detail": stats.last_error or f"{stats.records} records, {stats.commits} commits",
            }
        ]
        for check in adm.checks:
            name, ok, detail = check()
            entries.append({"name": name, "ok": ok, "detail": _short(detail)})
        return all(e["ok"] for e in entries), entries

    def outbox(self) -> dict[str, Any] | None:
        up = self.admin.upstream
        if up is None:
            return None
        out: dict[str, Any] = {"breaker": up.authority.status()["breaker"]}
        if up.forwarder is not None:
            box = up.forwarder.status(time.time())
            out.update(depth=box["depth"], age=box["age_seconds"], state=box["state"])
        return out

    async def overview(self, request: Request) -> Response:
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        ready, checks = self.readiness()
        query = readonly.EventQuery()
        recent = list(readonly.events(self.admin.store.reader, query, 10, newest_first=True))
        return self.render(
            request,
            "overview.html",
            session,
            state=self.state(),
            terminals=self.admin.terminal_list(),
            ready=ready,
            checks=checks,
            stats=self.admin.store.stats,
            outbox=self.outbox(),
            recent=recent,
        )

    async def events(self, request: Request) -> Response:
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        filters = _filters(request)
        query = readonly.EventQuery(
            person=filters["person"] or None,
            decision=filters["decision"] or None,
            door=filters["door"] or None,
        )
        rows = list(readonly.events(self.admin.store.reader, query, RECENT, newest_first=True))
        doors = sorted({d.name for d in self.admin.cfg.doors} | access.door_names(self.admin.cfg))
        return self.render(
            request, "events.html", session, events=rows, filters=filters, doors=doors
        )

    async def event(self, request: Request) -> Response:
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        try:
            event_id = int(request.path_params["event_id"])
        except ValueError:
            return self.render(request, "missing.html", session, 404, what="such event")
        reader = self.admin.store.reader
        row = queries.event(reader, EVENT_COLUMNS, event_id)
        if row is None:
            return self.render(request, "missing.html", session, 404, what=f"event {event_id}")
        try:
            why = explain.lines(reader, event_id)
        except NotFoundError:
            why = []
        return self.render(request, "event.html", session, event=event_json(row), why=why)

    async def people_page(self, request: Request) -> Response:
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        text = request.query_params.get("q", "").strip()[:100]
        reader = self.admin.store.reader
        found = people.search(reader, text, 100) if text else people.listing(reader, None, 100)
        return self.render(request, "people.html", session, q=text, people=found)

    async def person(self, request: Request) -> Response:
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        pid = request.path_params["person_id"]
        reader = self.admin.store.reader
        found = people.show(reader, pid, ZoneInfo(self.admin.cfg.site.timezone), self.faces)
        if found is None:
            return self.render(request, "missing.html", session, 404, what=f"person {pid!r}")
        for column in people.CREDENTIAL_COLUMNS:
            if column != "user_id":
                found[column] = [people.mask(v) for v in found[column]]
        groups = set(found.get("groups") or [])
        tables = access.export_tables(reader)
        permissions = [p for p in tables.get("permissions", []) if p.get("group") in groups]
        recent = list(
            readonly.events(reader, readonly.EventQuery(person=pid), 20, newest_first=True)
        )
        return self.render(
            request,
            "person.html",
            session,
            person=found,
            credentials=people.CREDENTIAL_COLUMNS,
            permissions=permissions,
            recent=recent,
        )

    async def face(self, request: Request) -> Response:
        """A person's face on file, as the JPEG it is (behind the login, like the person)."""
        if self.sessions.get(request) is None:
            return self._login_redirect(request)
        pid = request.path_params["person_id"]
        found = people.show(self.admin.store.reader, pid, ZoneInfo(self.admin.cfg.site.timezone))
        name = (found or {}).get("face")
        name = name["sha256"] if isinstance(name, dict) else name
        if not name or not self.faces.has(name):
            return Response("no face on file\n", 404, media_type="text/plain")
        data = await asyncio.to_thread(self.faces.read, name)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private"})

    async def import_page(self, request: Request) -> Response:
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        return self.render(request, "import.html", session, **_import_context())

    async def import_people(self, request: Request) -> Response:
        """The import form: ``preview`` shows the dry-run difference, ``apply`` writes it."""
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        try:
            form = await _form(request, MAX_IMPORT)
        except ValueError as exc:
            status = 413 if "larger than" in str(exc) else 400
            return self.render(
                request, "import.html", session, status, **_import_context(errors=[str(exc)])
            )
        if not self.sessions.csrf_ok(request, session, form.get("csrf")):
            return HTMLResponse("missing or wrong CSRF token", 403, headers=SECURITY_HEADERS)
        text = form.get("document", "")
        fmt = "csv" if form.get("format") == "csv" else "json"
        replace = form.get("replace") == "on"
        apply = form.get("action") == "apply"
        ctx = _import_context(document=text, format=fmt, replace=replace)
        try:
            results, warnings = await asyncio.to_thread(self._import, text, fmt, replace, not apply)
        except ImportFileError as exc:
            ctx["errors"] = exc.problems
            return self.render(request, "import.html", session, 422, **ctx)
        except (StoreError, NotFoundError) as exc:
            ctx["errors"] = [str(exc)]
            return self.render(request, "import.html", session, 503, **ctx)
        ctx.update(results=results, warnings=warnings, applied=apply)
        if apply:
            counts = ", ".join(
                f"{name} +{len(r.added)} ~{len(r.updated)} -{len(r.removed)}"
                for name, r in results.items()
            )
            log.info("web: people imported by %s (%s)", session.user, counts)
            ctx["document"] = ""
        return self.render(request, "import.html", session, **ctx)

    def _import(self, text: str, fmt: str, replace: bool, dry_run: bool) -> tuple[Any, list[str]]:
        """Parse the document as the admin API does, then apply it (or not).

        A pasted document names no files on the gateway: a face comes as ``face_base64``.
        """
        data, lines = importfile.parse_text(text.lstrip("\ufeff"), fmt)
        doc = people.parse_document(data, ZoneInfo(self.admin.cfg.site.timezone), lines)
        conn = store.connect(self.admin.store.path)
        try:
            warnings = people.warnings(
                doc, access.door_names(self.admin.cfg), access.existing(conn, "groups")
            )
            results = people.apply_document(
                conn, doc, replace=replace, dry_run=dry_run, faces=self.faces
            )
        finally:
            conn.close()
        return results, warnings

    async def trust(self, request: Request) -> Response:
        """Trust the certificate a managed terminal presents, as ``edged terminals trust`` does.

        The form carries the fingerprint the operator saw on the overview; edged fetches the
        certificate again and records it only when it is still that one, then re-registers.
        """
        session = self.sessions.get(request)
        if session is None:
            return self._login_redirect(request)
        try:
            form = await _form(request, MAX_FORM)
        except ValueError as exc:
            return HTMLResponse(str(exc), 400, headers=SECURITY_HEADERS)
        if not self.sessions.csrf_ok(request, session, form.get("csrf")):
            return HTMLResponse("missing or wrong CSRF token", 403, headers=SECURITY_HEADERS)
        name = request.path_params["name"]
        cfg = self.admin.cfg
        terminal = next((t for t in cfg.terminals if t.name == name and t.host), None)
        if terminal is None:
            return self.render(
                request, "missing.html", session, 404, what=f"managed terminal {name!r}"
            )
        seen = tlspin.normalise(form.get("fingerprint", ""))
        try:
            presented = await tlspin.fetch_certificate(terminal.host, terminal.port)
        except (OSError, TimeoutError) as exc:
            return self._trust_answer(request, session, 502, f"cannot reach {name}: {exc}")
        if not seen:  # first step: show what it presents, ask to confirm
            current = terminal_client.pin_for(self.admin.store.reader, terminal)
            return self.render(
                request, "trust.html", session, terminal=name, presented=presented, current=current
            )
        if presented.fingerprint != seen:
            return self._trust_answer(
                request,
                session,
                409,
                f"{name} now presents {presented.fingerprint}, not the certificate shown: "
                "nothing was trusted; look again",
            )
        await access_api.write(
            self.admin, lambda conn: terminal_client.record_pin(conn, terminal, presented)
        )
        log.info(
            "web: %s trusted terminal %s, certificate %s", session.user, name, presented.fingerprint
        )
        if self.admin.reconcilers is not None:
            self.admin.reconcilers.resubscribe(name)
        return RedirectResponse("/ui/", 303, headers=SECURITY_HEADERS)

    def _trust_answer(self, request: Request, session: Session, status: int, text: str) -> Response:
        return self.render(request, "missing.html", session, status, what=None, message=text)

    # ----- live ----------------------------------------------------------------------------

    async def stream(self, request: Request) -> Response:
        session = self.sessions.get(request)
        if session is None:
            return Response("log in first", 401, headers=SECURITY_HEADERS)
        filters = _filters(request)
        try:
            stream = self.live.open()
        except livemod.TooManyStreams:
            return Response("too many live streams open", 503, headers={"retry-after": "10"})

        def keep(item: dict[str, Any]) -> bool:
            return all(
                not want or str(item.get(key) or "") == want
                for key, want in (
                    ("door", filters["door"]),
                    ("person_id", filters["person"]),
                    ("decision", filters["decision"]),
                )
            )

        headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
        return StreamingResponse(
            self.live.events(stream, self.state, keep),
            media_type="text/event-stream",
            headers=headers,
        )

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", 404)
        return FileResponse(
            HERE / "static" / name,
            media_type=STATIC[name],
            headers={"cache-control": "max-age=300"},
        )

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/ui/", 303)

    def routes(self) -> list[BaseRoute]:
        """The page's routes, served on the admin listener before the API's."""
        return [
            Route("/", self.root),
            Route("/ui", self.root),
            Route("/ui/", self.overview),
            Route("/ui/login", self.login_page, methods=["GET"]),
            Route("/ui/login", self.login, methods=["POST"]),
            Route("/ui/logout", self.logout, methods=["POST"]),
            Route("/ui/events", self.events),
            Route("/ui/events/{event_id}", self.event),
            Route("/ui/stream", self.stream),
            Route("/ui/people", self.people_page),
            Route("/ui/people/import", self.import_page, methods=["GET"]),
            Route("/ui/people/import", self.import_people, methods=["POST"]),
            Route("/ui/people/{person_id}", self.person),
            Route("/ui/people/{person_id}/face", self.face),
            Route("/ui/terminals/{name}/trust", self.trust, methods=["POST"]),
            Route("/ui/static/{name}", self.static),
        ]


def _filters(request: Request) -> dict[str, str]:
    q = request.query_params
    return {k: q.get(k, "").strip()[:100] for k in ("door", "person", "decision")}


def _short(detail: Any) -> str:
    """A readiness check's detail in a line."""
    if not isinstance(detail, dict):
        return ""
    parts = []
    for key, value in list(detail.items())[:4]:
        if isinstance(value, dict | list):
            value = (
                ", ".join(f"{k}: {v}" for k, v in value.items())
                if isinstance(value, dict)
                else ", ".join(map(str, value))
            )
        parts.append(f"{key}: {value}")
    return "; ".join(parts)[:200]


def _import_context(**given: Any) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "document": "",
        "format": "json",
        "replace": False,
        "results": None,
        "warnings": [],
        "errors": [],
        "applied": False,
    }
    ctx.update(given)
    return ctx


__all__ = ["COOKIE", "Web"]
