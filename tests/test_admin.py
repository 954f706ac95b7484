"""The admin API through the ASGI stack, on a real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator

import pytest

from edged import admin, store
from edged.config import Config
from edged.receiver import Receiver, create_app
from tests.conftest import SERIAL, asgi_client, auth_request, recognition

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
