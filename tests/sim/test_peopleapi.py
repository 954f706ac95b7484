"""The simulator's people endpoints over real HTTPS, on every firmware."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edged.sim.terminal import SimulatedTerminal
from edged.terminals import tlspin

pytestmark = pytest.mark.anyio


def client(sim: SimulatedTerminal) -> httpx.AsyncClient:
    ctx = tlspin.pinned_context(sim.fingerprint)
    return httpx.AsyncClient(
        base_url=sim.url, verify=ctx, timeout=5.0, auth=("admin", "admin-pass")
    )


def rule_body(rid: Any) -> dict[str, Any]:
    return {"rule_id": rid, "name": f"r{rid}", "schedule": {"onset_point": 1, "expire_point": 2}}


async def call(c: httpx.AsyncClient, method: str, path: str, body: Any = None) -> dict[str, Any]:
    response = await c.request(method, path, json=body)
    assert response.status_code in (200, 404)
    return dict(response.json())


async def test_users_groups_rules_and_their_refusals(sim: SimulatedTerminal) -> None:
    old = not sim.firmware.v2
    uid: Any = 7 if old else "e-7"
    async with client(sim) as c:
        assert (await call(c, "POST", "/v1/rule", rule_body("1")))["code"] == 200
        group = {"group_id": "10", "name": "staff", "rule_id": "1"}
        assert (await call(c, "POST", "/v1/group", group))["code"] == 200
        user = {"user_id": uid, "name": "Ann", "groups": [10 if old else "10"], "avatar": "/9j/"}
        made = await call(c, "POST", "/v1/user", user)
        assert made["code"] == 200 and made["data"]["user_id"] == uid
        moved = await call(c, "POST", "/v1/user", {**user, "type": 2})
        assert moved["code"] == 409 and "type cannot change" in moved["msg"]
        listed = (await call(c, "GET", "/v1/user/offset/0/limit/100"))["data"]
        assert listed["total"] == 1 and listed["items"][0]["user_id"] == uid
        assert (await call(c, "GET", "/v1/user/offset/0/limit/101"))["code"] == 400
        fetched = await call(c, "GET", f"/v1/user/id/{uid}")
        assert fetched["data"]["name"] == "Ann"
        assert (await call(c, "DELETE", "/v1/group/id/10"))["code"] == 409
        assert (await call(c, "DELETE", f"/v1/user/id/{uid}"))["code"] == 200
        assert (await call(c, "DELETE", f"/v1/user/id/{uid}"))["code"] == 404
        bad = {"user_id": "x" * 129, "name": "Long"}
        assert (await call(c, "POST", "/v1/user", bad))["code"] == 400
        blacklisted = {"user_id": 8 if old else "e-8", "name": "B", "type": 5}
        answer = await call(c, "POST", "/v1/user", blacklisted)
        assert answer["code"] == (400 if sim.firmware.blacklist_type == 3 else 200)
        assert (await c.get("/v1/user/offset/0/limit/1", auth=None)).status_code == 401


async def test_batches_answer_per_item_and_datasync_where_the_firmware_has_it(
    sim: SimulatedTerminal,
) -> None:
    async with client(sim) as c:
        await call(c, "POST", "/v1/rule", rule_body("1"))
        await call(c, "POST", "/v1/group", {"group_id": "10", "name": "staff", "rule_id": "1"})
        users = [
            {"user_id": "a", "name": "A", "groups": ["10"]},
            {"user_id": "b", "name": "B", "groups": ["99"]},
            {"user_id": "c", "name": "C"},
        ]
        batch = await call(c, "POST", "/v2/user", {"user_list": users})
        info = await call(c, "GET", "/v2/datasync/info")
        if not sim.firmware.v2:
            assert batch["code"] == 404 and info["code"] == 404
            return
        assert batch["code"] == 200
        assert batch["data"]["errors"] == [
            {"id": "b", "code": 409, "msg": "group 99 does not exist"}
        ]
        assert sorted(u["id"] for u in info["data"]["users"]) == ["a", "c"]
        assert info["data"]["rules"][0]["id"] == "1"
        gone = await call(c, "DELETE", "/v2/user", {"ids": ["a", "ghost"]})
        assert [e["id"] for e in gone["data"]["errors"]] == ["ghost"]
        assert list(sim.library.users) == ["c"]
        await call(c, "GET", "/v2/datasync/clear")
        assert not sim.library.users and not sim.library.rules
