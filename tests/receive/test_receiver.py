"""The receiver through the ASGI stack, on a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.access import people
from edged.config import Config
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from edged.store import snapshots
from tests.conftest import SERIAL, SERIAL_OLD, asgi_client, auth_request, recognition

pytestmark = pytest.mark.anyio


@pytest.fixture
async def receiver(cfg: Config) -> AsyncIterator[Receiver]:
    st = store.Store(
        cfg.storage.database_path, cfg.storage.images_path, cfg.storage.images_max_bytes
    )
    yield Receiver(cfg, st)
    st.close()


def add_person(rec: Receiver, pid: str = "e-1", **fields: object) -> None:
    """A person in group 'staff', which may use door 'lobby' (the terminal's name) always."""
    row = {"id": pid, "name": "Ann Example", "groups": "staff", **fields}
    doc = {"people": [row], "permissions": [{"group": "staff", "door": "lobby"}]}
    parsed = people.parse_document(doc, ZoneInfo("UTC"))
    conn = store.connect(rec.store.path)
    people.apply_document(conn, parsed, replace=False)
    conn.close()


def count(rec: Receiver, where: str = "1=1") -> int:
    conn = sqlite3.connect(rec.store.path)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}").fetchone()[0])
    finally:
        conn.close()


async def test_recognition_push_is_stored_and_acknowledged(receiver: Receiver) -> None:
    async with asgi_client(create_app(receiver)) as client:
        response = await client.post("/eventRcv", json=recognition())
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200 and body["msg"] == "success" and body["message"] == "success"
    assert "pass" not in body["data"]
    assert count(receiver, "kind = 'recognition' AND replayed = 0") == 1


async def test_pin_is_redacted_and_image_kept_out_of_database(receiver: Receiver) -> None:
    jpeg = "/9j/4AAQSkZJRgABAQ=="
    async with asgi_client(create_app(receiver)) as client:
        await client.post("/eventRcv", json=recognition(rgb_image=jpeg))
    conn = sqlite3.connect(receiver.store.path)
    raw, *place = conn.execute(
        "SELECT raw, image_path, image_offset, image_bytes FROM events"
    ).fetchone()
    conn.close()
    stored = json.loads(raw)
    assert stored["data"]["user"]["pin"] == "***"
    assert "1234" not in raw and jpeg not in raw
    assert receiver.store.sync_files()
    image = snapshots.read(Path(receiver.cfg.storage.images_path), *place)
    assert image == base64.b64decode(jpeg)


async def test_duplicate_gets_same_answer_and_is_stored_once(receiver: Receiver) -> None:
    add_person(receiver)
    body = auth_request()
    async with asgi_client(create_app(receiver)) as client:
        first = await client.post("/auth", json=body)
        second = await client.post("/auth", json=body)
    assert first.json() == second.json()
    assert first.json()["data"]["pass"] is True
    assert count(receiver) == 1
    assert count(receiver, "duplicates = 0") == 1  # counted in memory, written lazily
    await receiver.store.flush_duplicates()
    assert count(receiver, "duplicates = 1") == 1


async def test_known_person_passes_unknown_is_denied(receiver: Receiver) -> None:
    add_person(receiver)
    async with asgi_client(create_app(receiver)) as client:
        yes = (await client.post("/auth", json=auth_request())).json()["data"]
        no = (await client.post("/auth", json=auth_request(user_id="nobody"))).json()["data"]
    assert yes["pass"] is True and yes["verify_code"] == 2 and yes["user_name"] == "Ann Example"
    assert no["pass"] is False and no["customtips"] == "Not registered"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"blocked": "true"}, "blocked"),
        ({"valid_until": "2020-01-01"}, "expired"),
        ({"valid_from": "2999-01-01"}, "not_yet_valid"),
    ],
)
async def test_first_rule_denies(receiver: Receiver, fields: dict[str, str], reason: str) -> None:
    add_person(receiver, **fields)
    async with asgi_client(create_app(receiver)) as client:
        data = (await client.post("/auth", json=auth_request())).json()["data"]
    assert data["pass"] is False
    assert count(receiver, f"reason = '{reason}'") == 1


async def test_stale_request_is_replayed_and_never_passes(receiver: Receiver) -> None:
    add_person(receiver)
    async with asgi_client(create_app(receiver)) as client:
        old = await client.post("/auth", json=auth_request(ts=time.time() - 3600))
        ahead = await client.post("/auth", json=auth_request(ts=time.time() + 3600))
    assert old.json()["data"]["pass"] is False
    assert ahead.json()["data"]["pass"] is False
    assert count(receiver, "replayed = 1 AND reason = 'replayed'") == 2


async def test_either_path_accepts_the_other_shape(receiver: Receiver) -> None:
    add_person(receiver)
    async with asgi_client(create_app(receiver)) as client:
        push_on_auth = await client.post("/auth", json=recognition())
        auth_on_event = await client.post("/eventRcv", json=auth_request())
    assert push_on_auth.json()["data"] == {}
    assert auth_on_event.json()["data"]["pass"] is True


async def test_old_firmware_and_alarms_and_unknown_types(receiver: Receiver) -> None:
    old = {
        "type": 0,
        "data": {
            "recognizeStatus": 2,
            "deviceSN": SERIAL_OLD,
            "recognizeScore": 0.98,
            "livenessScore": 0.9,
            "mask": 1,
            "rgb_image": "",
            "pass": True,
            "mode": 0,
            "user": {"name": "Q", "user_id": 1, "type": 1, "ic_number": 111, "job_number": 2222},
            "timestamp": int(time.time()),
        },
    }
    alarm = {
        "type": 1,
        "data": {
            "deviceSN": SERIAL,
            "trace_id": "t-9",
            "code": 10002,
            "status": 1,
            "event_time": int(time.time() * 1000),
            "description": "door forced open",
            "alarm_photo": "",
        },
    }
    other = {"type": 7, "data": {"deviceSN": SERIAL, "whatever": [1, 2, 3]}}
    async with asgi_client(create_app(receiver)) as client:
        for body in (old, alarm, other):
            response = await client.post("/eventRcv", json=body)
            assert response.status_code == 200, response.text
    assert count(receiver, "kind = 'recognition' AND user_id = '1'") == 1
    assert count(receiver, "kind = 'alarm' AND alarm_code = 10002 AND replayed = 0") == 1
    assert count(receiver, "kind = 'other' AND push_type = 7") == 1


async def test_heartbeat_answers_and_records_terminal(receiver: Receiver) -> None:
    async with asgi_client(create_app(receiver)) as client:
        response = await client.get("/auth", headers={"sn": SERIAL})
    assert response.status_code == 200
    assert receiver.seen[SERIAL].last_heartbeat is not None


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"not json", {"content-type": "application/json"}, 400),
        (b"[1,2]", {"content-type": "application/json"}, 400),
        (b'{"type":0,"data":"x"}', {"content-type": "application/json"}, 400),
        (b'{"type":0,"data":{"recognizeScore":0.5}}', {"content-type": "application/json"}, 400),
        (
            # from a configured terminal these are stored as malformed (receive/test_malformed.py)
            json.dumps(recognition(serial="UNKNOWN1", recognizeScore={"x": 1})).encode(),
            {"content-type": "application/json"},
            400,
        ),
        # "²" and "٣" pass str.isdigit; only the second is a number to int()
        (rb'{"type":"\u00b2","data":{}}', {"content-type": "application/json"}, 400),
        (
            json.dumps(recognition(serial="UNKNOWN1", recognizeStatus="\u00b2")).encode(),
            {"content-type": "application/json"},
            400,
        ),
        (b"{}", {"content-type": "text/plain"}, 415),
        (
            json.dumps(recognition(serial="UNKNOWN1")).encode(),
            {"content-type": "application/json"},
            403,
        ),
        (
            json.dumps(recognition()).encode(),
            {"content-type": "application/json", "sn": "SOMEONE-ELSE"},
            403,
        ),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    receiver: Receiver, content: bytes, headers: dict[str, str], status: int
) -> None:
    async with asgi_client(create_app(receiver)) as client:
        for path in ("/eventRcv", "/auth"):
            response = await client.post(path, content=content, headers=headers)
            assert response.status_code == status
            body = response.json()
            assert body["code"] == status and body["msg"]
            assert body.get("data", {}).get("pass") in (None, False)
    assert count(receiver) == 0


async def test_source_outside_allowed_networks_is_refused(receiver: Receiver) -> None:
    async with asgi_client(create_app(receiver), host="203.0.113.9") as client:
        response = await client.post("/auth", json=auth_request())
        beat = await client.get("/auth")
    assert response.status_code == 403 and response.json()["data"]["pass"] is False
    assert beat.status_code == 403
    assert count(receiver) == 0


async def test_declared_oversized_body_is_refused(receiver: Receiver) -> None:
    limit = receiver.cfg.receiver.max_body_bytes
    async with asgi_client(create_app(receiver)) as client:
        response = await client.post(
            "/eventRcv",
            content=b"{" + b" " * (limit + 1) + b"}",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert count(receiver) == 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
AUTH_FIELDS = [
    "deviceSN",
    "recognizeStatus",
    "recognizeScore",
    "entry_mode",
    "mask",
    "rgb_image",
    "timestamp",
    "qrcode_content",
    "user",
    "recognitionType",
    "type",
    "data",
    "uuid",
]


def may_pass(body: object, now: float) -> bool:
    """What a body must look like for a granted answer to be legitimate."""
    if not isinstance(body, dict) or ("type" in body and "data" in body):
        return False
    user = body.get("user")
    stamp = body.get("timestamp")
    if not isinstance(user, dict) or user.get("user_id") != "e-1":
        return False
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return False
    fresh = abs(now - (stamp / 1000 if stamp > 1e11 else stamp)) <= 31
    live = body.get("recognizeStatus") not in (1, "1") and body.get("recognitionType") not in (4, 5)
    return fresh and live and user.get("type") not in (3, 5, "3", "5")


def test_fuzzed_requests_never_500_never_wrongly_pass(cfg: Config) -> None:
    st_ = store.Store(cfg.storage.database_path)
    rec = Receiver(cfg, st_)
    add_person(rec)
    app = create_app(rec)

    async def send(path: str, content: bytes) -> tuple[int, dict]:
        async with asgi_client(app) as client:
            response = await client.post(
                path, content=content, headers={"content-type": "application/json"}
            )
            return response.status_code, response.json()

    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        mutations=st.dictionaries(st.sampled_from(AUTH_FIELDS), JSON, max_size=5),
        drop=st.lists(st.sampled_from(AUTH_FIELDS), max_size=3),
        whole=st.one_of(st.none(), JSON),
        path=st.sampled_from(["/auth", "/eventRcv"]),
    )
    def check(mutations: dict, drop: list[str], whole: object, path: str) -> None:
        body: object = auth_request()
        if whole is not None:
            body = whole
        else:
            assert isinstance(body, dict)
            body.update(mutations)
            for key in drop:
                body.pop(key, None)
        status, answer = asyncio.run(send(path, json.dumps(body).encode()))
        assert status == 200 or 400 <= status < 500, (status, answer)
        assert answer["code"] == status
        granted = (answer.get("data") or {}).get("pass") is True
        outcomes[granted] += 1
        if granted:
            assert may_pass(body, time.time()), body

    outcomes = {True: 0, False: 0}
    try:
        check()
    finally:
        st_.close()
    assert outcomes[True] > 0 and outcomes[False] > 0  # both sides of the property were seen


async def test_terminal_seen_survives_a_restart(cfg: Config) -> None:
    st = store.Store(cfg.storage.database_path)
    rec = Receiver(cfg, st)
    async with asgi_client(create_app(rec)) as client:
        await client.get("/eventRcv", headers={"sn": SERIAL})
        await client.post("/eventRcv", json=recognition())
    st.close()
    st = store.Store(cfg.storage.database_path)
    try:
        again = Receiver(cfg, st)
        seen = again.seen[SERIAL]
        assert seen.address == "127.0.0.1" and seen.last_heartbeat is not None
    finally:
        st.close()


async def test_configured_tips_are_sent_and_cut_to_64_bytes(
    make_config: Callable[..., Config],
) -> None:
    cfg = make_config(
        '[tips]\nunknown_person = "Bitte melden Sie sich am Empfang an - ' + "ü" * 40 + '"\n'
    )
    st = store.Store(cfg.storage.database_path)
    try:
        async with asgi_client(create_app(Receiver(cfg, st))) as client:
            data = (await client.post("/auth", json=auth_request(user_id="x"))).json()["data"]
    finally:
        st.close()
    tip = data["customtips"]
    assert tip.startswith("Bitte melden") and len(tip.encode()) <= 64
    tip.encode().decode("utf-8")  # never a cut character


def _files(receiver: Receiver) -> dict[str, bytes]:
    """The database file and its WAL, byte for byte."""
    db = Path(receiver.cfg.storage.database_path)
    return {p.name: p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists()}


async def test_a_duplicate_is_answered_from_a_read_and_writes_nothing(receiver: Receiver) -> None:
    add_person(receiver)
    push, auth = recognition(uuid="dup-1"), auth_request()
    async with asgi_client(create_app(receiver)) as client:
        firsts = [await client.post("/eventRcv", json=push), await client.post("/auth", json=auth)]
        await receiver.store.flush_duplicates()
        commits, files = receiver.store.stats.commits, _files(receiver)
        for _ in range(20):
            again = [
                await client.post("/eventRcv", json=push),
                await client.post("/auth", json=auth),
            ]
            assert [r.json() for r in again] == [r.json() for r in firsts]
        assert receiver.store.stats.commits == commits  # no transaction, no fsync
        assert _files(receiver) == files  # not a byte written to the database or its WAL
    assert receiver.store.stats.duplicates == 40
    assert count(receiver, "duplicates = 0") == 2  # counted in memory so far
    await receiver.store.flush_duplicates()  # written lazily, all in one commit
    assert count(receiver, "duplicates = 20") == 2
