"""The admin API through the ASGI stack, on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import httpx
import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.admin import app as admin
from edged.config import Config
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from tests.conftest import SERIAL, LiveDaemon, asgi_client, auth_request, recognition

pytestmark = pytest.mark.anyio
TOKEN = {"authorization": "Bearer test-token"}


@pytest.fixture
async def parts(cfg: Config) -> AsyncIterator[tuple[Receiver, admin.Admin]]:
    st = store.Store(cfg.storage.database_path)
    rec = Receiver(cfg, st)
    yield rec, admin.Admin(cfg, rec, "test-token")
    st.close()


async def fill(rec: Receiver) -> None:
    async with asgi_client(create_app(rec)) as client:
        for i in range(5):
            await client.post("/eventRcv", json=recognition(uuid=f"u{i}"))
        await client.post("/auth", json=auth_request(user_id="nobody"))


async def test_events_filters_and_pages(parts: tuple[Receiver, admin.Admin]) -> None:
    rec, adm = parts
    await fill(rec)
    async with asgi_client(admin.create_app(adm)) as client:
        page = (await client.get("/api/v1/events", params={"limit": 2})).json()
        assert [e["id"] for e in page["events"]] == [1, 2] and page["next_after"] == 2
        rest = (await client.get("/api/v1/events", params={"after": 2, "limit": 10})).json()
        assert [e["id"] for e in rest["events"]] == [3, 4, 5, 6] and rest["next_after"] is None
        denied = (await client.get("/api/v1/events", params={"decision": "deny"})).json()
        assert [(e["kind"], e["reason"]) for e in denied["events"]] == [("auth", "unknown_person")]
        by_terminal = (await client.get("/api/v1/events", params={"terminal": "lobby"})).json()
        assert len(by_terminal["events"]) == 6
        future = (
            await client.get("/api/v1/events", params={"since": "2999-01-01T00:00:00Z"})
        ).json()
        assert future["events"] == []
        since = (await client.get("/api/v1/events", params={"since": time.time() - 60})).json()
        assert len(since["events"]) == 6
        bad = await client.get("/api/v1/events", params={"limit": "many"})
        assert bad.status_code == 400 and "limit" in bad.json()["msg"]


async def test_event_detail_has_raw_without_secrets(parts: tuple[Receiver, admin.Admin]) -> None:
    rec, adm = parts
    await fill(rec)
    async with asgi_client(admin.create_app(adm)) as client:
        detail = (await client.get("/api/v1/events/1")).json()
        missing = await client.get("/api/v1/events/999")
        wrong = await client.get("/api/v1/events/abc")
    assert detail["raw"]["data"]["user"]["pin"] == "***"
    assert detail["response"]["code"] == 200 and detail["serial"] == SERIAL
    assert missing.status_code == 404 and wrong.status_code == 400


async def test_writes_need_the_token(parts: tuple[Receiver, admin.Admin]) -> None:
    _, adm = parts
    body = [{"id": "e-1", "name": "Ann"}]
    async with asgi_client(admin.create_app(adm)) as client:
        none = await client.post("/api/v1/people", json=body)
        wrong = await client.post(
            "/api/v1/people", json=body, headers={"authorization": "Bearer nope"}
        )
        ok = await client.post("/api/v1/people", json=body, headers=TOKEN)
    assert none.status_code == 401 and wrong.status_code == 401
    assert ok.status_code == 200 and ok.json()["added"] == ["e-1"]
    adm.token = ""
    async with asgi_client(admin.create_app(adm)) as client:
        disabled = await client.post("/api/v1/people", json=body, headers=TOKEN)
    assert disabled.status_code == 403


async def test_people_api_is_all_or_nothing(parts: tuple[Receiver, admin.Admin]) -> None:
    rec, adm = parts
    async with asgi_client(admin.create_app(adm)) as client:
        dry = await client.post(
            "/api/v1/people?dry_run=true",
            headers=TOKEN,
            json={"people": [{"id": "a", "name": "A"}]},
        )
        bad = await client.post(
            "/api/v1/people",
            headers=TOKEN,
            json=[{"id": "a", "name": "A"}, {"id": "", "name": "?"}],
        )
        junk = await client.post("/api/v1/people", headers=TOKEN, content=b"{nope")
    assert dry.json()["dry_run"] is True and dry.json()["added"] == ["a"]
    assert bad.status_code == 422 and bad.json()["errors"] == ["line 2: id: required"]
    assert junk.status_code == 400
    conn = sqlite3.connect(rec.store.path)
    assert conn.execute("SELECT COUNT(*) FROM people").fetchone() == (0,)


async def test_readyz_reflects_the_store(parts: tuple[Receiver, admin.Admin]) -> None:
    rec, adm = parts
    async with asgi_client(admin.create_app(adm)) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        rec.store.stats.last_error = "disk full"
        failing = await client.get("/readyz")
    assert failing.status_code == 503
    assert failing.json()["checks"]["store"]["last_error"] == "disk full"


async def test_terminals_lists_configured_and_seen(parts: tuple[Receiver, admin.Admin]) -> None:
    rec, adm = parts
    async with asgi_client(create_app(rec)) as client:
        await client.get("/auth", headers={"sn": SERIAL})
    async with asgi_client(admin.create_app(adm)) as client:
        terminals = (await client.get("/api/v1/terminals")).json()["terminals"]
    lobby = next(t for t in terminals if t["name"] == "lobby")
    assert lobby["last_heartbeat"] is not None and lobby["configured"] is True
    assert {t["name"] for t in terminals} == {"lobby", "old-gate"}


# ----- bad input on a live daemon: 400s, never a 500 ----------------------------------------

ADMIN_DOORS = """
[gpio]
pin_factory = "mock"

[[doors]]
name = "lobby"
lock = { pin = 17 }

[[doors]]
name = "old-gate"
lock = { pin = 18 }
"""
HUGE = "99999999999999999999"
# The only 5xx the admin API means to give: nothing to resubscribe (no managed terminal).
MEANT_5XX = {"no terminal is managed (none has a host)"}


@pytest.fixture
def guarded(
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[[Config], LiveDaemon],
) -> LiveDaemon:
    """A live daemon with two doors on mock pins and one stored record (event 1)."""
    live = start_live(make_config(ADMIN_DOORS))
    assert httpx.post(f"{live.url}/eventRcv", json=recognition()).status_code == 200
    return live


def deep(levels: int, opener: str = "[", closer: str = "]") -> bytes:
    """JSON nested ``levels`` deep."""
    return (opener * levels + closer * levels).encode()


def test_ids_and_cursors_beyond_64_bits_are_400(guarded: LiveDaemon) -> None:
    base = guarded.admin_url
    for url in (
        f"{base}/api/v1/events/{HUGE}",
        f"{base}/api/v1/events/-{HUGE}",
        f"{base}/api/v1/events?after=-{HUGE}",
        f"{base}/api/v1/events?after={2**63}",
        f"{base}/api/v1/events?limit={HUGE}",
        f"{base}/api/v1/doors/log?after={HUGE}",
        f"{base}/api/v1/doors/log?limit=-{HUGE}",
        f"{base}/api/v1/people?limit={HUGE}",
    ):
        r = httpx.get(url, headers=TOKEN)
        assert r.status_code == 400, url
        assert "integer" in r.json()["msg"] or "range" in r.json()["msg"]
    r = httpx.get(f"{base}/api/v1/events/{HUGE}/snapshot", headers=TOKEN)
    assert r.status_code == 400
    assert httpx.get(f"{base}/api/v1/events?after={2**63 - 1}").json()["events"] == []


def test_unicode_digits_do_not_read_an_event(guarded: LiveDaemon) -> None:
    base = guarded.admin_url
    assert httpx.get(f"{base}/api/v1/events/1").status_code == 200
    for digits in ("%EF%BC%91", "%D9%A1", "%F0%9D%9F%99", "%C2%B9"):  # full-width, Arabic, bold, ¹
        r = httpx.get(f"{base}/api/v1/events/{digits}")
        assert r.status_code == 400, digits
        assert "not an integer" in r.json()["msg"]
    r = httpx.get(f"{base}/api/v1/events", params={"after": "\uff10"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/people"),
        ("DELETE", "/api/v1/people"),
        ("POST", "/api/v1/modes"),
        ("POST", "/api/v1/doors/lobby/open"),
    ],
)
@pytest.mark.parametrize("body", [deep(100_000), deep(100_000, '{"a":', "}"), deep(5000)])
def test_deeply_nested_bodies_are_400(
    guarded: LiveDaemon, method: str, path: str, body: bytes
) -> None:
    r = httpx.request(method, f"{guarded.admin_url}{path}", content=body, headers=TOKEN)
    assert r.status_code == 400
    assert "nested too deeply" in json.dumps(r.json())
    assert guarded.daemon.doors is not None
    assert guarded.daemon.doors.status()["doors"][0]["locked"] is True


EXTREME = st.sampled_from(
    [
        HUGE,
        f"-{HUGE}",
        str(2**63),
        str(-(2**63) - 1),
        "9" * 5000,
        "\uff11",
        "\u0661",
        "\u00b9",
        "\U0001d7d9",
        "1e3",
        " 1",
        "0x10",
        "+1",
        "1_0",
        "-0",
        "",
        "\x00",
        "\ud800",
    ]
)
TEXTS = st.one_of(EXTREME, st.integers().map(str), st.text(max_size=12))
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**64, -(2**70), 10**400]),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
BODY_KEYS = st.sampled_from(
    [
        "people",
        "ids",
        "mode",
        "on",
        "door",
        "schedule",
        "override_group",
        "by",
        "name",
        "source",
        "permissions",
        "groups",
        "id",
        "schedules",
    ]
)
BODIES = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(BODY_KEYS, JSON, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=900, max_value=3000).map(deep),
    st.binary(max_size=20),
)
PATH_ROUTES = [
    ("GET", "/api/v1/events/{}"),
    ("GET", "/api/v1/events/{}/snapshot"),
    ("GET", "/api/v1/people/{}"),
    ("DELETE", "/api/v1/people/{}"),
    ("POST", "/api/v1/doors/{}/open"),
    ("POST", "/api/v1/doors/lobby/{}"),
]
QUERY_ROUTES = ["/api/v1/events", "/api/v1/doors/log", "/api/v1/people"]
QUERY_KEYS = st.sampled_from(
    [
        "after",
        "limit",
        "since",
        "terminal",
        "serial",
        "person",
        "door",
        "group",
        "decision",
        "kind",
        "reason",
    ]
)
BODY_ROUTES = [
    ("POST", "/api/v1/people"),
    ("POST", "/api/v1/people?dry_run=1"),
    ("DELETE", "/api/v1/people"),
    ("POST", "/api/v1/modes"),
    ("POST", "/api/v1/terminals/resubscribe"),
    ("POST", "/api/v1/doors/lobby/lock"),
]
FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_no_5xx(r: httpx.Response) -> None:
    """The answer is not a server error, bar the one meant."""
    meant = r.status_code == 503 and r.json().get("msg") in MEANT_5XX
    assert r.status_code < 500 or meant, (r.request.url, r.status_code, r.text[:300])


@FUZZ
@given(route=st.sampled_from(PATH_ROUTES), value=TEXTS)
def test_fuzz_path_parameters(guarded: LiveDaemon, route: tuple[str, str], value: str) -> None:
    method, template = route
    segment = quote(value.encode("utf-8", "surrogatepass"), safe="") or "%20"
    url = guarded.admin_url + template.format(segment)
    assert_no_5xx(httpx.request(method, url, headers=TOKEN))


@FUZZ
@given(path=st.sampled_from(QUERY_ROUTES), query=st.dictionaries(QUERY_KEYS, TEXTS, max_size=4))
def test_fuzz_query_parameters(guarded: LiveDaemon, path: str, query: dict[str, str]) -> None:
    encoded = "&".join(
        f"{k}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in query.items()
    )
    r = httpx.get(f"{guarded.admin_url}{path}?{encoded}")
    assert_no_5xx(r)
    assert r.status_code in (200, 400)


@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), body=BODIES)
def test_fuzz_bodies(guarded: LiveDaemon, route: tuple[str, str], body: bytes) -> None:
    method, path = route
    r = httpx.request(method, f"{guarded.admin_url}{path}", content=body, headers=TOKEN)
    assert_no_5xx(r)
