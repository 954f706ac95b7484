"""One bad request only ever affects its own answer: the writer, malformed records, a full disk.

Through the receiver's ASGI app on a real Store (writer thread, SQLite file in tmp_path), and the
live daemon for what the operator sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings, strategies

from edged.cli import main as cli
from edged.config import Config
from edged.errors import StoreError
from edged.model import Event
from edged.receive.normalize import bounded, check_values, normalize
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from edged.store.events import Record, Stored
from tests.conftest import SERIAL, LiveDaemon, asgi_client, auth_request, grant_person, recognition
from tests.timefix import until

pytestmark = pytest.mark.anyio

ANSWER_WITHIN = 5.0  # seconds: a request that takes longer is a hung request
JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture
async def receiver(cfg: Config) -> AsyncIterator[Receiver]:
    st = store.Store(cfg.storage.database_path)
    yield Receiver(cfg, st)
    st.close()


def rows(rec: Receiver, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(rec.store.path)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


async def post(client: httpx.AsyncClient, path: str, body: bytes, **headers: str) -> httpx.Response:
    """POST ``body``; a request not answered within ANSWER_WITHIN fails the test."""
    call = client.post(path, content=body, headers={**JSON_HEADERS, **headers})
    return await asyncio.wait_for(call, ANSWER_WITHIN)


def push(**fields: Any) -> bytes:
    """A recognition push from the configured terminal with ``fields`` replaced."""
    return json.dumps(recognition(**fields)).encode()


async def a_normal_record_is_stored(client: httpx.AsyncClient, rec: Receiver, uuid: str) -> None:
    response = await post(client, "/eventRcv", push(uuid=uuid))
    assert response.status_code == 200, response.text
    assert rows(rec, f"SELECT kind FROM events WHERE uuid = '{uuid}'") == [("recognition",)]


# ----- values the database would refuse never reach the writer ----------------------------


WEDGES = {
    "integer beyond 64 bits": b'"entry_mode":100000000000000000000',
    "integral float 1e300": b'"entry_mode":1e300',
    "lone surrogate": b'"user":{"name":"\\ud800","user_id":"e-1"}',
    "huge timestamp": b'"timestamp":' + b"9" * 400,
    "NaN": b'"recognizeScore":NaN',
}


@pytest.mark.parametrize("value", list(WEDGES.values()), ids=list(WEDGES))
async def test_a_value_the_database_refuses_is_answered_and_stored_as_malformed(
    receiver: Receiver, value: bytes
) -> None:
    body = b'{"type":0,"data":{"deviceSN":"%s","uuid":"bad-1",%s}}' % (SERIAL.encode(), value)
    async with asgi_client(create_app(receiver)) as client:
        response = await post(client, "/eventRcv", body)
        assert response.status_code == 200, response.text
        assert response.json()["code"] == 200
        again = await post(client, "/eventRcv", body)  # the terminal re-sends it
        assert again.json() == response.json()
        await a_normal_record_is_stored(client, receiver, "good-1")
    stored = rows(receiver, "SELECT kind, uuid, reason, duplicates FROM events WHERE id = 1")
    kind, uuid, reason, duplicates = stored[0]
    assert (kind, uuid, duplicates) == ("malformed", "bad-1", 1)
    assert reason.startswith("data.")
    assert receiver.store.stats.pending_items == 0 and receiver.store.healthy()


async def test_a_lone_surrogate_in_a_remote_auth_request_is_denied(receiver: Receiver) -> None:
    grant_person(receiver.store.path)
    body = json.dumps(auth_request()).replace('"Ann"', '"\\udc00"').encode()
    unknown = body.replace(SERIAL.encode(), b"UNKNOWN1")
    async with asgi_client(create_app(receiver)) as client:
        response = await post(client, "/auth", body)
        garbage = await post(client, "/auth", unknown)
        fine = await post(client, "/auth", json.dumps(auth_request()).encode())
    assert response.status_code == 200
    assert response.json()["data"]["pass"] is False and response.json()["code"] == 200
    assert garbage.status_code == 400 and garbage.json()["data"]["pass"] is False
    assert fine.json()["data"]["pass"] is True  # the decision path still works
    assert rows(receiver, "SELECT kind, decision FROM events ORDER BY id") == [
        ("malformed", None),
        ("auth", "pass"),
    ]


async def test_forty_bad_pushes_leak_nothing_from_the_pending_budget(receiver: Receiver) -> None:
    async with asgi_client(create_app(receiver)) as client:
        answers = await asyncio.gather(
            *(post(client, "/eventRcv", push(uuid=f"b-{i}", entry_mode=10**20)) for i in range(40))
        )
        assert {a.status_code for a in answers} == {200}
        await a_normal_record_is_stored(client, receiver, "after")
    assert receiver.store.stats.pending_items == 0
    assert receiver.store.stats.pending_bytes == 0
    assert rows(receiver, "SELECT COUNT(*) FROM events WHERE kind = 'malformed'") == [(40,)]


HOSTILE_LEAVES = (
    strategies.integers()
    | strategies.floats()
    | strategies.text(
        strategies.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=2000
    )
    | strategies.none()
)
HOSTILE_JSON = strategies.recursive(
    HOSTILE_LEAVES,
    lambda inner: (
        strategies.lists(inner, max_size=40)
        | strategies.dictionaries(strategies.text(max_size=3), inner)
    ),
    max_leaves=400,
)


@settings(max_examples=60, deadline=None)
@given(payload=HOSTILE_JSON, depth=strategies.integers(min_value=0, max_value=200))
def test_a_malformed_payload_is_kept_storable_and_bounded(payload: Any, depth: int) -> None:
    for _ in range(depth):
        payload = {"data": payload, "rgb_image": "/9j/" + "A" * 100}
    kept = bounded(payload)
    check_values(kept)  # nothing in it that the database or strict JSON refuses
    text = json.dumps(kept, allow_nan=False, ensure_ascii=False)
    assert len(text) < 200_000
    assert "AAAA" not in text  # no image


# ----- the writer: any exception answers every waiter ----------------------------------------


@pytest.fixture
def st(tmp_path: Path) -> Iterator[store.Store]:
    writer = store.Store(tmp_path / "edged.db")
    yield writer
    writer.close()


def unchecked(uuid: str, **values: Any) -> Record:
    """A record whose event carries ``values`` the normaliser would have refused."""
    event = normalize(recognition(uuid=uuid))
    for name, value in values.items():
        setattr(event, name, value)
    return Record(event, time.time(), None, None, {"code": 200})


async def hold_writer(st: store.Store) -> tuple[threading.Event, asyncio.Future[Any]]:
    """Keep the writer busy until the event is set, so what is queued meanwhile shares a commit."""
    release, started = threading.Event(), threading.Event()

    def job(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(ANSWER_WITHIN)

    held = asyncio.ensure_future(st.run(job))
    while not started.is_set():
        await asyncio.sleep(0.001)
    return release, held


@pytest.mark.parametrize(
    "values",
    [{"entry_mode": 10**20}, {"serial": "\ud800"}, {"dedup_key": "k-\udfff"}],
    ids=["OverflowError", "UnicodeEncodeError in serial", "UnicodeEncodeError in key"],
)
async def test_a_record_failing_inside_the_commit_fails_only_its_own_answer(
    st: store.Store, values: dict[str, Any]
) -> None:
    release, held = await hold_writer(st)
    records = [unchecked("g-1"), unchecked("bad", **values), unchecked("g-2")]
    saves = [asyncio.ensure_future(st.save(r)) for r in records]
    await until(lambda: st.stats.pending_items == 1 + len(saves))  # all queued behind the job
    release.set()
    await held
    outcomes = await asyncio.wait_for(asyncio.gather(*saves, return_exceptions=True), 5)
    assert isinstance(outcomes[0], Stored) and isinstance(outcomes[2], Stored)
    assert isinstance(outcomes[1], StoreError)
    after = await asyncio.wait_for(st.save(unchecked("g-3")), 5)  # no transaction left open
    assert not after.duplicate
    uuids = [r[0] for r in st.db.conn.execute("SELECT uuid FROM events ORDER BY id")]
    assert uuids == ["g-1", "g-2", "g-3"]
    assert st.stats.pending_items == 0 and st.stats.pending_bytes == 0
    assert st.healthy()


# ----- malformed records: stored, acknowledged, never acted on, shown -----------------------


class Heard:
    """A receiver listener: what was acted on (doors, automations and the outbox listen)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event, record: Record, stored: Stored) -> None:
        self.events.append(event)


async def test_a_known_terminals_invalid_record_is_stored_flagged_and_not_acted_on(
    receiver: Receiver,
) -> None:
    heard = Heard()
    receiver.listeners.append(heard)
    bad_push = push(uuid="m-1", recognizeScore={"x": 1}, rgb_image="/9j/" + "A" * 400)
    bad_auth = json.dumps(auth_request(recognizeScore="high")).encode()
    async with asgi_client(create_app(receiver)) as client:
        acked = await post(client, "/eventRcv", bad_push)
        denied = await post(client, "/auth", bad_auth)
        replayed = await post(client, "/auth", bad_auth)
    assert acked.status_code == 200 and acked.json()["msg"] == "success"
    assert "pass" not in acked.json()["data"]
    assert denied.status_code == 200
    assert denied.json()["data"]["pass"] is False and denied.json()["msg"] == "OK"
    assert replayed.json() == denied.json()
    assert heard.events == []
    await receiver.store.flush_duplicates()  # the replay's count is written lazily
    stored = rows(receiver, "SELECT kind, decision, reason, raw, duplicates FROM events")
    assert [(r[0], r[1], r[4]) for r in stored] == [("malformed", None, 0), ("malformed", None, 1)]
    assert stored[0][2] == 'data.recognizeScore: expected a number, got {"x": 1}'
    raw = json.loads(stored[0][3])
    assert raw["data"]["rgb_image"] == "<404 base64 chars, dropped>"
    assert raw["data"]["user"]["pin"] == "***"
    assert receiver.stats.answered["malformed"] == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (push(serial="UNKNOWN1", recognizeScore={"x": 1}), 400),
        (b'{"type":0,"data":{"uuid":"no-serial","entry_mode":"x"}}', 400),
    ],
    ids=["not JSON", "unknown terminal", "no serial"],
)
async def test_garbage_from_elsewhere_still_gets_its_4xx(
    receiver: Receiver, body: bytes, status: int
) -> None:
    async with asgi_client(create_app(receiver)) as client:
        response = await post(client, "/eventRcv", body)
        auth = await post(client, "/auth", body)
    assert response.status_code == status and auth.status_code == status
    assert auth.json()["data"]["pass"] is False
    assert rows(receiver, "SELECT COUNT(*) FROM events") == [(0,)]


async def test_a_malformed_record_from_outside_the_networks_is_refused(
    receiver: Receiver,
) -> None:
    async with asgi_client(create_app(receiver), host="203.0.113.9") as client:
        response = await post(client, "/eventRcv", push(recognizeScore={"x": 1}))
    assert response.status_code == 403
    assert rows(receiver, "SELECT COUNT(*) FROM events") == [(0,)]


@pytest.fixture
async def small(cfg: Config) -> AsyncIterator[Receiver]:
    """A receiver with max_body_bytes of 4 KiB."""
    small_cfg = dataclasses.replace(
        cfg, receiver=dataclasses.replace(cfg.receiver, max_body_bytes=4096)
    )
    st = store.Store(small_cfg.storage.database_path)
    yield Receiver(small_cfg, st)
    st.close()


async def test_a_record_too_large_only_because_of_its_image_is_stored_without_it(
    small: Receiver,
) -> None:
    image = "/9j/" + "A" * 8000  # twice max_body_bytes
    async with asgi_client(create_app(small)) as client:
        kept = await post(client, "/eventRcv", push(uuid="big-1", rgb_image=image), sn=SERIAL)
        too_large = await post(client, "/eventRcv", push(uuid="big-2", rgb_image=image * 3))
        not_image = await post(client, "/eventRcv", push(uuid="big-3", remark="x" * 8000))
        unknown = await post(
            client, "/eventRcv", push(serial="UNKNOWN1", rgb_image=image), sn="UNKNOWN1"
        )
    assert kept.status_code == 200 and kept.json()["code"] == 200
    assert too_large.status_code == 413  # over 4 x max_body_bytes: not read at all
    assert not_image.status_code == 413
    assert unknown.status_code == 413
    stored = rows(small, "SELECT kind, uuid, reason, raw FROM events")
    assert [(r[0], r[1]) for r in stored] == [("malformed", "big-1")]
    assert stored[0][2] == "body larger than 4096 bytes; image dropped"
    assert len(stored[0][3]) < 4096


def test_the_operator_sees_malformed_records_in_readyz_and_status(
    live: LiveDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert httpx.post(f"{live.url}/eventRcv", json=recognition(uuid="ok-1")).status_code == 200
    ready = httpx.get(f"{live.admin_url}/readyz").json()
    assert ready["checks"]["receiver"]["malformed"] == {"count": 0, "last": None}
    bad = recognition(uuid="m-1", mask=[1])
    assert httpx.post(f"{live.url}/eventRcv", json=bad).status_code == 200
    ready = httpx.get(f"{live.admin_url}/readyz").json()
    assert ready["ready"] is True  # an alarm for the operator, not a readiness failure
    malformed = ready["checks"]["receiver"]["malformed"]
    assert malformed["count"] == 1
    assert malformed["last"]["serial"] == SERIAL and malformed["last"]["terminal"] == "lobby"
    assert malformed["last"]["reason"] == "data.mask: expected an integer, got [1]"
    cfg_file = tmp_path / "cli.toml"
    cfg_file.write_text(
        f'[admin]\nlisten = ["127.0.0.1:{live.daemon.admin_port}"]\ntoken = "test-token"\n'
        f'[storage]\nstate_dir = "{tmp_path / "unused"}"\n'
    )
    capsys.readouterr()
    cli.main(["status", "-c", str(cfg_file)])
    out = capsys.readouterr().out
    assert "ALARM" in out and "1 malformed records stored" in out
    assert "from lobby" in out and "data.mask: expected an integer" in out


# ----- a full disk: one ERROR when it starts, one INFO when it ends -------------------------


async def test_a_full_disk_logs_one_error_not_one_per_record(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    pages = receiver.store.db.conn.execute("PRAGMA page_count").fetchone()[0]
    await receiver.store.run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
    caplog.set_level(logging.DEBUG, logger="edged.store.events")
    async with asgi_client(create_app(receiver)) as client:
        answers = [
            (await post(client, "/eventRcv", push(uuid=f"f-{i}", remark="x" * 900))).status_code
            for i in range(80)
        ]
        full = answers.index(503)  # the free room of the last pages is used first
        assert full < 20 and set(answers[full:]) == {503}
        assert not receiver.store.healthy()
        await receiver.store.run(lambda conn: conn.execute("PRAGMA max_page_count = 1073741823"))
        await a_normal_record_is_stored(client, receiver, "after")
    store_logs = [r for r in caplog.records if r.name == "edged.store.events"]
    errors = [r for r in store_logs if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "full" in errors[0].getMessage()
    infos = [r.getMessage() for r in store_logs if r.levelno == logging.INFO]
    assert infos == [f"store: writing again; {80 - full} commits refused meanwhile"]
    assert receiver.store.healthy()
