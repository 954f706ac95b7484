"""People sync from a fake upstream over real HTTP, and what a stale cache means."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from edged import config
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from edged.upstream import client as upstream
from edged.upstream.feature import Upstream
from tests.conftest import asgi_client, auth_request, grant_person
from tests.fakeupstream import FakeUpstream

pytestmark = pytest.mark.anyio

SYNC = """
[upstream]
people_url = "{url}/people"
max_cache_age = 3600
stale_cache = "{stale}"
override_people = ["boss"]
"""

GOOD = {
    "people": [
        {"id": "e-1", "name": "Ann Example", "ic_number": "11223344", "groups": "staff"},
        {"id": "boss", "name": "Bo Boss", "groups": "staff"},
    ],
    "permissions": [{"group": "staff", "door": "lobby"}],
}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


class Rig:
    """Store, receiver and upstream (people sync + authority) on one configuration."""

    def __init__(self, cfg: config.Config) -> None:
        self.store = store.Store(cfg.storage.database_path, None)
        self.upstream = Upstream(cfg, self.store)
        self.receiver = Receiver(cfg, self.store, authority=self.upstream.authority)
        assert self.upstream.sync is not None
        self.sync = self.upstream.sync
        self.asked = 0

    def people(self) -> list[str]:
        conn = sqlite3.connect(self.store.path)
        ids = [r[0] for r in conn.execute("SELECT id FROM people ORDER BY id")]
        conn.close()
        return ids

    async def ask(self, user_id: str) -> tuple[bool, str]:
        async with asgi_client(create_app(self.receiver)) as client:
            self.asked += 1  # a distinct score: not a duplicate of an earlier request
            body = auth_request(user_id=user_id, recognizeScore=0.5 + self.asked / 1000)
            response = await client.post("/auth", json=body)
        conn = sqlite3.connect(self.store.path)
        reason = conn.execute("SELECT reason FROM events ORDER BY id DESC LIMIT 1").fetchone()[0]
        conn.close()
        return response.json()["data"]["pass"], reason

    def last_steps(self) -> list[str]:
        conn = sqlite3.connect(self.store.path)
        row = conn.execute("SELECT explain FROM events ORDER BY id DESC LIMIT 1").fetchone()
        conn.close()
        steps: list[str] = json.loads(row[0])
        return steps

    async def close(self) -> None:
        await self.sync.aclose()
        await self.upstream.authority.aclose()
        self.store.close()


@pytest.fixture
async def rig_for(
    make_config: Callable[..., config.Config], fake: FakeUpstream
) -> AsyncIterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def build(stale: str = "keep", extra: str = "") -> Rig:
        rig = Rig(make_config(SYNC.format(url=fake.url, stale=stale) + extra))
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        await rig.close()


def document(people: Any) -> bytes:
    return json.dumps(people).encode()


async def test_good_document_is_applied_then_revalidated_with_its_etag(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    fake.state.people = document(GOOD)
    assert await rig.sync.sync_once() == "updated"
    assert rig.people() == ["boss", "e-1"]
    first = rig.sync.state.synced_at
    assert first is not None and rig.sync.state.etag == '"v1"'
    assert await rig.sync.sync_once() == "unchanged"
    assert fake.state.people_requests[-1]["if-none-match"] == '"v1"'
    assert rig.sync.state.synced_at is not None and rig.sync.state.synced_at >= first


async def test_changed_document_replaces_the_cache_whole(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    fake.state.people = document(GOOD)
    await rig.sync.sync_once()
    fake.state.people = document({"people": [{"id": "c-9", "name": "Cy"}]})
    fake.state.etag = '"v2"'
    assert await rig.sync.sync_once() == "updated"
    assert rig.people() == ["c-9"]


@pytest.mark.parametrize(
    ("body", "status", "why"),
    [
        (document([*GOOD["people"], {"id": "x", "name": ""}]), 200, "line 3: name: required"),
        (document([*GOOD["people"], {"id": "e-1", "name": "Twin"}]), 200, "already on line 1"),
        (b"{not json", 200, "not valid JSON"),
        (document({"staff": []}), 200, "lists nobody"),
        (document({"people": GOOD["people"], "staff": []}), 200, "staff: unknown section"),
        (document("everyone"), 200, "expected a JSON list"),
        (document([]), 200, "lists nobody"),
        (document(GOOD), 500, "HTTP 500"),
    ],
)
async def test_bad_document_is_refused_and_the_last_good_cache_stays(
    rig_for: Callable[..., Rig],
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    status: int,
    why: str,
) -> None:
    rig = rig_for()
    fake.state.people = document(GOOD)
    await rig.sync.sync_once()
    synced = rig.sync.state.synced_at
    fake.state.people, fake.state.etag, fake.state.people_status = body, '"bad"', status
    with caplog.at_level(logging.DEBUG, logger="edged.upstream.sync"):
        assert await rig.sync.sync_once() == "failed"
        assert await rig.sync.sync_once() == "failed"
    assert rig.people() == ["boss", "e-1"]
    assert rig.sync.state.synced_at == synced and why in (rig.sync.state.last_error or "")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and why in errors[0].getMessage()  # once, at the transition


async def test_each_new_problem_logs_its_own_error(
    rig_for: Callable[..., Rig], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_for()
    problems = [
        (b"{not json", 200, "not valid JSON"),
        (b"{not json", 200, "not valid JSON"),  # the same again: DEBUG
        (document([{"id": "x", "name": ""}]), 200, "name: required"),
        (document(GOOD), 503, "HTTP 503"),
        (document(GOOD), 503, "HTTP 503"),  # the same again: DEBUG
    ]
    with caplog.at_level(logging.DEBUG, logger="edged.upstream.sync"):
        for body, status, _ in problems:
            fake.state.people, fake.state.people_status = body, status
            assert await rig.sync.sync_once() == "failed"
        fake.state.people, fake.state.people_status = document(GOOD), 200
        assert await rig.sync.sync_once() == "updated"
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    errors = [text for level, text in logged if level == "ERROR"]
    assert len(errors) == 3
    for text, (_, _, why) in zip(errors, [problems[0], problems[2], problems[3]], strict=True):
        assert why in text
    assert [level for level, _ in logged].count("DEBUG") == 2
    assert [level for level, _ in logged if level != "DEBUG"][-2:] == ["INFO", "INFO"]


@pytest.mark.parametrize("chunked", [False, True], ids=["announced", "streamed"])
async def test_a_document_over_the_limit_is_refused_unread(
    rig_for: Callable[..., Rig], fake: FakeUpstream, chunked: bool
) -> None:
    rig = rig_for(extra="people_max_bytes = 100000\n")
    fake.state.people = document(GOOD)
    assert await rig.sync.sync_once() == "updated"
    big = {"people": [{"id": f"p-{i}", "name": "x" * 100} for i in range(2000)]}
    fake.state.people, fake.state.etag, fake.state.chunked = document(big), '"v2"', chunked
    assert len(fake.state.people) > 100_000
    assert await rig.sync.sync_once() == "failed"
    assert rig.people() == ["boss", "e-1"]  # the last good cache stays
    assert rig.sync.state.last_error == (
        "the document is larger than 100000 bytes (upstream.people_max_bytes)"
    )


async def test_sync_state_survives_a_restart(
    make_config: Callable[..., config.Config], fake: FakeUpstream
) -> None:
    cfg = make_config(SYNC.format(url=fake.url, stale="keep"))
    fake.state.people = document(GOOD)
    first = Rig(cfg)
    await first.sync.sync_once()
    await first.close()
    second = Rig(cfg)
    try:
        assert second.sync.state.etag == '"v1"' and not second.sync.stale(time.time())
        assert await second.sync.sync_once() == "unchanged"
    finally:
        await second.close()


async def test_stale_cache_denies_all_but_the_override_list(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(stale="deny")
    fake.state.people = document(GOOD)
    await rig.sync.sync_once()
    assert await rig.ask("e-1") == (True, "granted")
    assert rig.sync.state.synced_at is not None
    rig.sync.state.synced_at -= 7200  # two hours without a successful sync
    assert await rig.ask("e-1") == (False, upstream.CACHE_STALE)
    stale = "the people cache is older than upstream.max_cache_age"
    assert rig.last_steps()[-2:] == [
        "PASS granted: permission open now",
        f"DENY cache_stale: {stale} (upstream.stale_cache = deny)",
    ]
    assert await rig.ask("boss") == (True, "granted")
    assert rig.last_steps()[-1] == f"{stale}; boss is in upstream.override_people"
    assert await rig.ask("nobody") == (False, "unknown_person")


async def test_stale_cache_kept_with_a_warning(
    rig_for: Callable[..., Rig], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_for(stale="keep")
    fake.state.people_status = 503  # never synced: stale from the start
    with caplog.at_level(logging.WARNING, logger="edged.upstream.sync"):
        await rig.sync.sync_once()
        rig.sync._report_staleness()
    assert any("still deciding from it" in r.getMessage() for r in caplog.records)
    assert rig.sync.stale(time.time())
    grant_person(rig.store.path, "e-1", door="lobby", name="Ann")
    assert await rig.ask("e-1") == (True, "granted")


async def test_a_stale_cache_does_not_touch_upstream_decisions(
    make_config: Callable[..., config.Config], fake: FakeUpstream
) -> None:
    text = SYNC.format(url=fake.url, stale="deny") + f'url = "{fake.url}/auth"\ndeadline = 2.0\n'
    rig = Rig(make_config(text))
    try:
        fake.state.people_status = 503  # never synced: stale
        await rig.sync.sync_once()
        assert await rig.ask("e-1") == (True, "upstream_granted")
        fake.stop()  # now the cache decides, and a stale cache denies
        assert await rig.ask("boss") == (False, "unknown_person")
    finally:
        await rig.close()


async def test_the_upstream_document_carries_faces_as_base64_and_never_as_paths(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    import base64

    from edged.access.faces import FaceStore
    from tests.conftest import face_jpeg

    rig = rig_for()
    photo = base64.b64encode(face_jpeg(7)).decode()
    fake.state.people = document({"people": [{"id": "e-1", "name": "Ann", "face_base64": photo}]})
    assert await rig.sync.sync_once() == "updated"
    faces = FaceStore(rig.sync.cfg.storage.faces_path)
    assert [faces.read(n) for n in faces.names()] == [face_jpeg(7)]
    fake.state.people = document({"people": [{"id": "e-1", "name": "Ann", "face": "/etc/passwd"}]})
    fake.state.etag = '"v2"'
    assert await rig.sync.sync_once() == "failed"
    assert "only from an import file" in (rig.sync.state.last_error or "")
    fake.state.people = document({"people": [{"id": "e-2", "name": "Bob"}]})
    fake.state.etag = '"v3"'
    assert await rig.sync.sync_once() == "updated"
    assert rig.people() == ["e-2"] and list(faces.names()) == []
