"""The admin API for people, documents, modes and explanations, through the ASGI stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from edged.admin import app as admin
from edged.config import Config
from edged.receive import receiver
from edged.store import events as store
from tests.conftest import asgi_client, auth_request

pytestmark = pytest.mark.anyio

AUTH = {"authorization": "Bearer test-token"}
DOC = {
    "people": [{"id": "e-1", "name": "Ann", "groups": ["staff"], "ic_number": "11223344"}],
    "groups": [{"id": "security"}],
    "schedules": [{"id": "day", "periods": [{"days": ["mon"], "start": "08:00", "end": "09:00"}]}],
    "permissions": [{"group": "staff", "door": "lobby"}],
}


class Stack:
    """The admin app and the receiver app over one store."""

    def __init__(self, cfg: Config) -> None:
        self.store = store.Store(cfg.storage.database_path)
        self.receiver = receiver.Receiver(cfg, self.store)
        self.admin = admin.Admin(cfg, self.receiver, "test-token")
        self.sent = 0

    def admin_client(self) -> httpx.AsyncClient:
        return asgi_client(admin.create_app(self.admin))

    async def auth(self, **fields: Any) -> dict[str, Any]:
        """A fresh (not duplicate) remote-auth request for e-1 at door lobby."""
        self.sent += 1  # a distinct score makes every request a new record, never a duplicate
        fields.setdefault("recognizeScore", 0.9 + self.sent / 1000)
        async with asgi_client(receiver.create_app(self.receiver)) as client:
            response = await client.post("/auth", json=auth_request(**fields))
        return dict(response.json()["data"])


@pytest.fixture
async def stack(cfg: Config) -> AsyncIterator[Stack]:
    s = Stack(cfg)
    yield s
    s.store.close()


async def test_writes_need_the_token(stack: Stack) -> None:
    async with stack.admin_client() as client:
        for method, url in (
            ("POST", "/api/v1/people"),
            ("DELETE", "/api/v1/people"),
            ("DELETE", "/api/v1/people/e-1"),
            ("POST", "/api/v1/modes"),
            ("GET", "/api/v1/export"),
        ):
            response = await client.request(method, url, json={})
            assert response.status_code == 401, url


async def test_document_upsert_takes_effect_on_the_next_decision(stack: Stack) -> None:
    assert (await stack.auth())["pass"] is False
    async with stack.admin_client() as client:
        dry = await client.post("/api/v1/people?dry_run=1", json=DOC, headers=AUTH)
        assert dry.json()["added"] == ["e-1"] and dry.json()["dry_run"] is True
        assert (await stack.auth())["pass"] is False
        done = await client.post("/api/v1/people", json=DOC, headers=AUTH)
        assert done.status_code == 200 and done.json()["sections"]["permissions"]["added"]
    data = await stack.auth()
    assert data["pass"] is True and data["verify_code"] == 2


async def test_bad_rows_are_all_reported_and_nothing_changes(stack: Stack) -> None:
    bad = [{"id": "a", "name": "A"}, {"name": "no id"}, {"id": "c", "name": "C", "type": "x"}]
    async with stack.admin_client() as client:
        response = await client.post("/api/v1/people", json=bad, headers=AUTH)
        listing = await client.get("/api/v1/people")
    assert response.status_code == 422
    assert [e.split(":")[0] for e in response.json()["errors"]] == ["line 2", "line 3"]
    assert listing.json()["people"] == []


async def test_list_show_delete(stack: Stack) -> None:
    many = [{"id": f"p{i:02d}", "name": f"P{i}", "groups": ["g"]} for i in range(5)]
    async with stack.admin_client() as client:
        await client.post("/api/v1/people", json={"people": many}, headers=AUTH)
        page = (await client.get("/api/v1/people?limit=2&group=g")).json()
        assert [p["id"] for p in page["people"]] == ["p00", "p01"] and page["next_after"] == "p01"
        page = (await client.get("/api/v1/people?limit=10&after=p03")).json()
        assert [p["id"] for p in page["people"]] == ["p04"]
        shown = (await client.get("/api/v1/people/p02")).json()
        assert shown["groups"] == ["g"] and shown["user_id"] == ["p02"]
        gone = await client.request(
            "DELETE", "/api/v1/people", json={"ids": ["p00", "zz"]}, headers=AUTH
        )
        assert gone.json()["removed"] == ["p00"] and gone.json()["missing"] == ["zz"]
        one = await client.delete("/api/v1/people/p01", headers=AUTH)
        again = await client.delete("/api/v1/people/p01", headers=AUTH)
        assert one.status_code == 200 and again.status_code == 404
        assert (await client.get("/api/v1/people/p01")).status_code == 404


async def test_lockdown_from_the_api_is_audited_and_applies(stack: Stack) -> None:
    async with stack.admin_client() as client:
        await client.post("/api/v1/people", json=DOC, headers=AUTH)
        on = {"mode": "lockdown", "on": True, "override_group": "security", "by": "guard-desk"}
        assert (await client.post("/api/v1/modes", json=on, headers=AUTH)).status_code == 200
        denied = await stack.auth()
        off = {"mode": "lockdown", "on": False}
        await client.post("/api/v1/modes", json=off, headers=AUTH)
        bad = {"mode": "party", "on": True}
        assert (await client.post("/api/v1/modes", json=bad, headers=AUTH)).status_code == 422
        state = (await client.get("/api/v1/modes")).json()
    assert denied["pass"] is False and denied["customtips"] == "Lockdown"
    assert (await stack.auth())["pass"] is True
    assert [(c["by"], c["state"]) for c in state["changes"]] == [
        ("admin-api", "off"),
        ("guard-desk", "on"),
    ]


async def test_event_detail_includes_the_explanation(stack: Stack) -> None:
    async with stack.admin_client() as client:
        await client.post("/api/v1/people", json=DOC, headers=AUTH)
        await stack.auth()
        listing = (await client.get("/api/v1/events")).json()["events"]
        detail = (await client.get(f"/api/v1/events/{listing[0]['id']}")).json()
    assert listing[0]["reason"] == "granted"
    assert listing[0]["rule"] == "permission:staff@lobby/always"
    assert listing[0]["door"] == "lobby"
    assert detail["explain"][-1].startswith("PASS granted")
    assert any("groups staff" in step for step in detail["explain"])


async def test_anti_passback_reads_the_stored_passes(stack: Stack) -> None:
    door = {"doors": [{"name": "lobby", "anti_passback": 600}]}
    async with stack.admin_client() as client:
        await client.post("/api/v1/people", json={**DOC, **door}, headers=AUTH)
    first, second = await stack.auth(), await stack.auth()
    assert first["pass"] is True
    assert second["pass"] is False and second["customtips"] == "Already in"


async def test_a_face_sent_as_base64_is_kept_shown_exported_and_removed(stack: Stack) -> None:
    import base64

    from tests.conftest import face_jpeg

    photo = base64.b64encode(face_jpeg(3)).decode()
    body = {"people": [{"id": "e-1", "name": "Ann", "face_base64": photo}]}
    async with stack.admin_client() as client:
        done = await client.post("/api/v1/people", json=body, headers=AUTH)
        assert done.status_code == 200 and done.json()["added"] == ["e-1"]
        shown = (await client.get("/api/v1/people/e-1")).json()
        assert shown["face"]["on_file"] is True and shown["face"]["bytes"] == len(face_jpeg(3))
        assert shown["terminals"] == []
        exported = (await client.get("/api/v1/export", headers=AUTH)).json()
        assert exported["people"][0]["face_base64"] == photo
        path = {"people": [{"id": "e-2", "name": "Bob", "face": "/etc/hostname"}]}
        refused = await client.post("/api/v1/people", json=path, headers=AUTH)
        assert refused.status_code == 422 and "only from an import file" in str(refused.json())
        gone = await client.delete("/api/v1/people/e-1", headers=AUTH)
        assert gone.status_code == 200
    assert list(stack.admin.cfg.storage.faces_path.glob("*/*.jpg")) == []
