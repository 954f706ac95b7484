"""Upstream decisions against a fake server over real HTTP on loopback."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from edged import config
from edged.decide import explain
from edged.errors import ConfigError
from edged.ops import wiring
from edged.receive.normalize import normalize
from edged.receive.receiver import Receiver, create_app
from edged.store import events as store
from edged.upstream import client as upstream
from edged.upstream.feature import Upstream
from tests.conftest import (
    SERIAL,
    SERIAL_OLD,
    LiveDaemon,
    asgi_client,
    auth_request,
    grant_person,
    recognition,
)
from tests.fakeupstream import FakeUpstream
from tests.timefix import until

pytestmark = pytest.mark.anyio

# The base config's last table is the "old-gate" terminal: give it the door "vault".
DOORS = """door = "vault"

[upstream]
url = "{url}/auth"
deadline = {deadline}
breaker_failures = {failures}
probe_interval = 0.05
{extra}
"""


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


def upstream_config(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    deadline: float = 2.0,  # generous: a loaded test machine must not time out by chance
    failures: int = 3,
    extra: str = "",
) -> config.Config:
    text = DOORS.format(url=fake.url, deadline=deadline, failures=failures, extra=extra)
    return make_config(text)


class Rig:
    """A receiver with the upstream authority installed, through the ASGI stack."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.store = store.Store(cfg.storage.database_path, None)
        self.upstream = Upstream(cfg, self.store)
        self.receiver = Receiver(cfg, self.store, authority=self.upstream.authority)
        self.app = create_app(self.receiver)

    def add_person(self, pid: str = "e-1") -> None:
        for door in ("lobby", "vault"):
            grant_person(self.store.path, pid, door=door, name="Ann")

    async def ask(self, body: dict[str, Any] | bytes) -> tuple[dict[str, Any], float]:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        start = time.perf_counter()
        async with asgi_client(self.app) as client:
            response = await client.post(
                "/auth", content=content, headers={"content-type": "application/json"}
            )
        return response.json(), time.perf_counter() - start

    def why(self) -> tuple[str, list[str]]:
        """What ``edged why`` prints for the last record: its decision line and its steps."""
        conn = sqlite3.connect(self.store.path)
        conn.row_factory = sqlite3.Row
        try:
            lines = explain.lines(conn, self.last_row()["id"])
        finally:
            conn.close()
        return lines[1], [re.sub(r"^  \d+\. ", "", line) for line in lines[2:]]

    def last_row(self) -> dict[str, Any]:
        conn = sqlite3.connect(self.store.path)
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM events ORDER BY id DESC LIMIT 1").fetchone()
        conn.close()
        return dict(row)

    async def close(self) -> None:
        await self.upstream.authority.aclose()
        self.store.close()


@pytest.fixture
async def rig_for(
    make_config: Callable[..., config.Config], fake: FakeUpstream
) -> AsyncIterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def build(**kwargs: Any) -> Rig:
        rig = Rig(upstream_config(make_config, fake, **kwargs))
        rig.add_person()
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        await rig.close()


async def test_upstream_gets_the_raw_body_and_decides(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    fake.state.grant = False
    raw = json.dumps(auth_request(rgb_image="/9j/4AAQSkZJRgABAQ==")).encode() + b"  \n"
    answer, _ = await rig.ask(raw)
    assert fake.state.auth_bodies == [raw]  # byte for byte, image included
    assert answer["data"]["pass"] is False  # the cache would have granted
    assert answer["data"]["customtips"] == "Upstream says hi"
    row = rig.last_row()
    assert (row["source"], row["decision"], row["upstream_error"]) == ("upstream", "deny", None)


async def test_slow_upstream_is_cut_at_the_deadline(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(deadline=0.2)
    fake.state.auth_mode, fake.state.delay = "slow", 2.0
    answer, elapsed = await rig.ask(auth_request())
    assert 0.19 <= elapsed < 0.6  # cut at the deadline, long before the upstream's 2 s
    assert answer["data"]["pass"] is True  # the cache's decision
    row = rig.last_row()
    assert (row["source"], row["upstream_error"]) == ("cache", "timeout")


async def test_slow_storage_makes_edged_stop_waiting_earlier(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(deadline=0.6)
    fake.state.auth_mode, fake.state.delay = "slow", 2.0
    authority = rig.upstream.authority
    assert authority.answer_margin() == upstream.ANSWER_MARGIN  # no commit measured yet
    # storage that has been taking 100 ms a commit (an SD card in trouble)
    rig.store._commit_seconds.extend([0.001] * 10 + [0.1] * 90)
    assert rig.store.commit_estimate() == 0.1
    assert authority.answer_margin() == pytest.approx(upstream.ANSWER_MARGIN + 0.1)
    await rig.ask(auth_request())
    assert rig.last_row()["upstream_error"] == "timeout"
    waited = _ms(rig.why()[1][-2], "upstream not used: timeout (after ")
    assert 400 <= waited < 550  # the upstream got the deadline less the allowance (not 597 ms)
    rig.store._commit_seconds.extend([1.0] * 128)  # far worse: at most a quarter of the deadline
    assert authority.answer_margin() == pytest.approx(upstream.ANSWER_MARGIN + 0.15)


async def test_the_commit_estimate_follows_the_latest_commits(tmp_path: Path) -> None:
    st = store.Store(tmp_path / "c.db", None)
    try:
        assert st.commit_estimate() == 0.0
        for i in range(3):
            event = normalize(recognition(uuid=f"c{i}"))
            await st.save(store.Record(event, time.time(), None, None, {}))
        assert 0 < st.commit_estimate() < 5.0
        st._commit_seconds.clear()
        st._commit_seconds.extend([0.002] * 95 + [0.5] * 5)
        assert st.commit_estimate() == 0.5  # the 95th percentile: a tail, not a one-off
        st._commit_seconds.extend([0.002] * 128)
        assert st.commit_estimate() == 0.002  # only the latest 128 count
    finally:
        st.close()


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("http500", "http 500"),
        ("garbage", "malformed: not JSON"),
        ("code500", "code 500"),
        ("nopass", "malformed: data.pass is not true or false"),
    ],
)
async def test_bad_answers_fall_back_to_the_cache(
    rig_for: Callable[..., Rig], fake: FakeUpstream, mode: str, error: str
) -> None:
    rig = rig_for()
    fake.state.auth_mode = mode
    answer, _ = await rig.ask(auth_request())
    assert answer["data"]["pass"] is True
    row = rig.last_row()
    assert (row["source"], row["upstream_error"]) == ("cache", error)


async def test_down_upstream_falls_back_to_the_cache(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    fake.stop()
    answer, _ = await rig.ask(auth_request())
    assert answer["data"]["pass"] is True
    assert rig.last_row()["upstream_error"].startswith("connection: ")


async def test_breaker_opens_then_probes_and_closes(
    rig_for: Callable[..., Rig], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edged.upstream.client")
    rig = rig_for(failures=2)
    fake.state.auth_mode = "http500"
    for user in ("a", "b", "c"):
        await rig.ask(auth_request(user_id=user))
    assert rig.upstream.authority.breaker.open
    asked = len(fake.state.auth_bodies)
    answer, _ = await rig.ask(auth_request())
    assert len(fake.state.auth_bodies) == asked  # not asked while open
    assert answer["data"]["pass"] is True
    assert rig.last_row()["upstream_error"] == "breaker open"
    beats = fake.state.heartbeats
    fake.state.auth_mode = "ok"
    fake.state.grant = False
    await until(lambda: not rig.upstream.authority.breaker.open)
    assert fake.state.heartbeats > beats
    answer, _ = await rig.ask(auth_request(user_id="e-1", recognizeScore=0.51))
    assert answer["data"]["pass"] is False and rig.last_row()["source"] == "upstream"
    levels = [r.levelname for r in caplog.records if r.name == "edged.upstream.client"]
    assert levels == ["ERROR", "INFO"]  # one when it went down, one when it came back


async def test_flapping_upstream_never_opens_the_breaker(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(failures=2)
    fake.state.auth_mode = "flap"
    sources = []
    for i in range(6):
        await rig.ask(auth_request(recognizeScore=0.5 + i / 100))
        sources.append(rig.last_row()["source"])
    assert sources == ["upstream", "cache"] * 3
    assert not rig.upstream.authority.breaker.open


async def test_replayed_request_is_never_sent_upstream(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    answer, _ = await rig.ask(auth_request(ts=time.time() - 3600))
    assert fake.state.auth_bodies == []
    assert answer["data"]["pass"] is False and rig.last_row()["reason"] == "replayed"


async def test_online_only_door_never_granted_by_the_cache(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(extra='online_only_doors = ["vault"]')
    fake.stop()
    vault, _ = await rig.ask(auth_request(serial=SERIAL_OLD))
    assert vault["data"]["pass"] is False
    assert rig.last_row()["reason"] == upstream.UPSTREAM_UNAVAILABLE
    lobby, _ = await rig.ask(auth_request(serial=SERIAL))
    assert lobby["data"]["pass"] is True


async def test_online_only_door_granted_by_a_live_upstream(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(extra="cache_may_grant = false")
    answer, _ = await rig.ask(auth_request(serial=SERIAL_OLD))
    assert answer["data"]["pass"] is True and rig.last_row()["source"] == "upstream"
    fake.stop()
    answer, _ = await rig.ask(auth_request(serial=SERIAL, recognizeScore=0.51))
    assert answer["data"]["pass"] is False


def test_parse_answer_keeps_known_fields_and_cuts_tips() -> None:
    body = {"code": 200, "data": {"pass": True, "customtips": "é" * 40, "x": 1, "user_id": "7"}}
    data = upstream.parse_answer(200, json.dumps(body).encode())
    assert data["pass"] is True and data["user_id"] == "7" and "x" not in data
    assert len(data["customtips"].encode()) <= 64


def test_breaker_counts_consecutive_failures_only() -> None:
    breaker = upstream.Breaker(3)
    assert not breaker.failure("x", 0) and not breaker.failure("x", 0)
    breaker.success()
    assert not breaker.failure("x", 0) and not breaker.failure("x", 0)
    assert breaker.failure("x", 1.0) and breaker.open
    assert not breaker.failure("x", 2.0)  # already open: reported once
    assert breaker.success() and not breaker.open


def test_live_daemon_reports_the_upstream(
    make_config: Callable[..., config.Config],
    fake: FakeUpstream,
    start_live: Callable[[config.Config], LiveDaemon],
) -> None:
    live = start_live(upstream_config(make_config, fake))
    answer = httpx.post(f"{live.url}/auth", json=auth_request(user_id="nobody")).json()
    assert answer["data"]["pass"] is True  # the upstream's word
    ready = httpx.get(f"{live.admin_url}/readyz").json()
    decisions = ready["checks"]["upstream"]["decisions"]
    assert decisions["breaker"] == "closed" and decisions["counts"]["upstream"] == 1
    fake.stop()
    httpx.post(f"{live.url}/auth", json=auth_request(user_id="nobody", recognizeScore=0.51))
    events = httpx.get(f"{live.admin_url}/api/v1/events").json()["events"]
    assert [(e["source"], e["upstream_error"]) for e in events] == [
        ("upstream", None),
        ("cache", "connection: ConnectError"),
    ]
    status = httpx.get(f"{live.admin_url}/api/v1/upstream").json()
    assert status["enabled"] is True and status["outbox"] == {"enabled": False}


async def test_a_caller_without_the_raw_body_is_not_an_upstream_failure(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(failures=1, extra='online_only_doors = ["vault"]')
    event = normalize(auth_request(serial=SERIAL_OLD))
    record = await rig.receiver.decide(event, "old-gate")  # no raw bytes
    assert fake.state.auth_bodies == [] and not rig.upstream.authority.breaker.open
    assert record.upstream_error == "not asked: no request body"
    assert record.decision == "deny" and record.reason == upstream.UPSTREAM_UNAVAILABLE


async def test_https_upstream_with_a_private_ca_and_a_token(
    make_config: Callable[..., config.Config], tmp_path: Path
) -> None:
    ca = trustme.CA()
    pem, ca_file = tmp_path / "server.pem", tmp_path / "ca.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "token").write_text("s3cret\n")
    server = FakeUpstream(str(pem)).start()
    server.state.grant = False
    try:
        base = f'url = "{server.url}/auth"\ntoken_file = "{tmp_path / "token"}"\n'
        trusted = Rig(make_config(f'\n[upstream]\n{base}ca_file = "{ca_file}"\n'))
        answer, _ = await trusted.ask(auth_request(user_id="nobody"))
        assert trusted.last_row()["source"] == "upstream" and answer["data"]["pass"] is False
        assert server.state.authorization == ["Bearer s3cret"]
        await trusted.close()
        untrusted = Rig(make_config(f"\n[upstream]\n{base}", state=tmp_path / "other"))
        await untrusted.ask(auth_request(user_id="nobody"))
        assert untrusted.last_row()["upstream_error"].startswith("connection: ")
        await untrusted.close()
    finally:
        server.stop()


def test_unreadable_upstream_files_are_config_errors(
    make_config: Callable[..., config.Config], tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    for key in ("token_file", "ca_file"):
        cfg = make_config(f'\n[upstream]\nurl = "https://127.0.0.1:9/auth"\n{key} = "{missing}"\n')
        with pytest.raises(ConfigError, match=f"upstream.{key}: cannot"):
            wiring.build(cfg)


def _ms(step: str, prefix: str) -> int:
    found = re.search(re.escape(prefix) + r"(\d+) ms", step)
    assert found, step
    return int(found[1])


async def test_why_names_the_upstream_its_answer_and_the_cache_verdict_not_used(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    fake.state.grant, fake.state.tips, fake.state.delay = False, "No entry", 0.05
    await rig.ask(auth_request())
    decision, steps = rig.why()
    assert decision == "decision: deny (upstream_denied), rule upstream, decided by upstream"
    answered = steps[-2]
    assert answered.endswith(': {"pass": false, "customtips": "No entry", "verify_code": 3}')
    assert _ms(answered, "upstream answered in ") >= 50  # the fake waited 50 ms
    assert steps[-1] == (
        "DENY upstream_denied: the upstream decided (the cache's PASS above is not used)"
    )
    cache = steps[:-2]
    assert cache and all(step.startswith("cache, not used: ") for step in cache)
    assert cache[-1].startswith("cache, not used: PASS granted")


@pytest.mark.parametrize(
    ("mode", "failures", "said"),
    [
        ("garbage", 3, 'malformed: not JSON (after {ms} ms); it answered "<html>not json"'),
        ("code500", 3, 'code 500 (after {ms} ms); it answered "{{\\"code\\": 500'),
        ("http500", 1, "breaker open (after {ms} ms)"),  # the first request opened it
    ],
)
async def test_why_says_why_the_upstream_was_not_used(
    rig_for: Callable[..., Rig], fake: FakeUpstream, mode: str, failures: int, said: str
) -> None:
    rig = rig_for(failures=failures)
    fake.state.auth_mode = mode
    if failures == 1:
        await rig.ask(auth_request(recognizeScore=0.51))
    await rig.ask(auth_request())
    decision, steps = rig.why()
    assert decision.endswith("decided by cache")
    ms = _ms(steps[-2], "(after ")
    assert steps[-2].startswith("upstream not used: " + said.format(ms=ms))
    assert steps[-3].startswith("PASS granted")  # the cache's own steps, used
    assert steps[-1] == "PASS granted: the cache decided (the upstream was not used)"


async def test_why_gives_the_time_waited_for_an_upstream_cut_at_the_deadline(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(deadline=0.3)
    fake.state.auth_mode, fake.state.delay = "slow", 2.0
    await rig.ask(auth_request())
    _, steps = rig.why()
    assert steps[-2].startswith("upstream not used: timeout (after ")
    # The deadline less the answer's margin, not the upstream's 2 s; a loaded machine's loop may
    # wake late, so the upper bound is far from the deadline but well short of the answer.
    assert 200 <= _ms(steps[-2], "(after ") < 1500


async def test_why_says_only_the_upstream_may_grant_at_an_online_only_door(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for(extra='online_only_doors = ["vault"]')
    fake.stop()
    await rig.ask(auth_request(serial=SERIAL_OLD))
    decision, steps = rig.why()
    assert decision.startswith("decision: deny (upstream_unavailable)")
    assert steps[-2].startswith("upstream not used: connection: ConnectError (after ")
    assert steps[-1] == (
        "DENY upstream_unavailable: door vault is in upstream.online_only_doors: "
        "only the upstream may grant"
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["announced", "streamed"])
async def test_an_oversized_answer_is_malformed_never_a_grant(
    rig_for: Callable[..., Rig], fake: FakeUpstream, chunked: bool
) -> None:
    rig = rig_for()
    fake.state.auth_mode, fake.state.chunked = "huge", chunked  # 10 MB saying pass: true
    answer, _ = await rig.ask(auth_request(user_id="nobody"))  # the cache denies nobody
    assert answer["data"]["pass"] is False
    row = rig.last_row()
    limit = upstream.MAX_ANSWER_BYTES
    assert (row["source"], row["upstream_error"]) == (
        "cache",
        f"malformed: answer larger than {limit} bytes",
    )
    _, steps = rig.why()
    quoted = '; it answered "{\\"code\\": 200' in steps[-2]
    assert quoted is chunked  # refused on its Content-Length before reading, or read up to it
    assert rig.upstream.authority.breaker.failures == 1  # a failure like any malformed answer


async def test_a_replayed_request_says_it_was_not_sent_upstream(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    await rig.ask(auth_request(ts=time.time() - 3600))
    _, steps = rig.why()
    assert steps[-1] == "upstream not asked: a replayed request is never sent upstream"


def test_steps_never_show_card_numbers_the_upstream_sent() -> None:
    data = {"pass": True, "customtips": "Hi", "ic_number": "11223344", "user_id": "e-1"}
    step = upstream.answered_step(data, 0.012)
    assert step.startswith("upstream answered in 12 ms: ") and "11223344" not in step
    assert '"user_id": "e-1"' in step
    cut = json.dumps({"code": 500, "data": {"ic_number": "11223344"}}).encode()
    for content in (cut, cut[:-4]):  # whole, and cut in the middle of the number
        shown = upstream.excerpt(content)
        assert "1122" not in shown and shown.startswith('"{\\"code\\": 500')


async def test_why_of_an_older_upstream_record_says_its_cache_steps_were_not_used(
    tmp_path: Path,
) -> None:
    st = store.Store(tmp_path / "old.db", None)
    try:
        event = normalize(auth_request())
        record = store.Record(event, time.time(), None, "lobby", {"code": 200})
        record.decision, record.reason, record.rule = "deny", "upstream_denied", "upstream"
        record.source, record.explain = "upstream", ["PASS granted: permission open now"]
        stored = await st.save(record)  # as stored before the upstream's steps were recorded
        conn = sqlite3.connect(st.path)
        conn.row_factory = sqlite3.Row
        lines = explain.lines(conn, stored.id)
        conn.close()
    finally:
        st.close()
    assert lines[1].endswith("decided by upstream")
    assert lines[2] == "the upstream decided; the cache's steps below were not used"


async def test_a_repeated_request_asks_the_upstream_once(
    rig_for: Callable[..., Rig], fake: FakeUpstream
) -> None:
    rig = rig_for()
    fake.state.grant = False  # the upstream's answer differs from the cache's: it must stay
    body = auth_request()
    first, _ = await rig.ask(body)
    fake.state.grant = True
    again, _ = await rig.ask(body)
    assert len(fake.state.auth_bodies) == 1  # the duplicate was answered from the store
    assert again == first and first["data"]["pass"] is False
