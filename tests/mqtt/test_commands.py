"""Signed commands: verified before anything moves; over a real broker to MockFactory doors."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from edged.config import Config
from edged.mqtt import commands
from edged.mqtt.commands import CommandError, message, verify
from edged.mqtt.link import new_client
from tests.conftest import LiveDaemon
from tests.doorfix import LOCK, doors_toml, pin, wire_idle, wire_inputs
from tests.mqttfix import Broker, Subscriber, mqtt_toml, needs_mosquitto

SECRET = b"0123456789abcdef-test-secret"
PREFIX = "edged/test_site"
DOORS, SCOPES = {"lobby"}, {"lobby", "old-gate"}


def body(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "action": "open",
        "door": "lobby",
        "ts": time.time(),
        "nonce": "n-12345678",
    }
    out.update(fields)
    return out


# ----- verify(): pure -------------------------------------------------------------------------


def test_a_signed_command_is_verified() -> None:
    cmd = verify(message(SECRET, body(id="r1", by="alice")), SECRET, time.time(), DOORS, SCOPES)
    assert (cmd.action, cmd.door, cmd.request_id, cmd.by) == ("open", "lobby", "r1", "alice")
    mode = verify(
        message(SECRET, body(action="lockdown", on=True, door=None)),
        SECRET,
        time.time(),
        DOORS,
        SCOPES,
    )
    assert (mode.action, mode.on, mode.door) == ("lockdown", True, None)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda: b"not json", "malformed"),
        (lambda: b"x" * (commands.MAX_BYTES + 1), "malformed"),
        (lambda: json.dumps({"command": "open"}).encode(), "unsigned"),
        (lambda: json.dumps({"body": json.dumps(body())}).encode(), "unsigned"),
        (lambda: message(b"another-secret-0123456789", body()), "bad-signature"),
        (lambda: message(SECRET, body(ts=time.time() - 31)), "stale"),
        (lambda: message(SECRET, body(ts=time.time() + 31)), "stale"),
        (lambda: message(SECRET, body(ts="now")), "malformed"),
        (lambda: message(SECRET, body(nonce="short")), "malformed"),
        (lambda: message(SECRET, body(door="vault")), "unknown-door"),
        # a door edged does not drive (a terminal's door without [[doors]])
        (lambda: message(SECRET, body(door="old-gate")), "unknown-door"),
        (lambda: message(SECRET, body(action="explode")), "malformed"),
        (lambda: message(SECRET, body(action="lockdown")), "malformed"),  # no "on"
        (
            lambda: message(SECRET, body(action="free_access", on=True, door="vault")),
            "unknown-door",
        ),
        (lambda: message(SECRET, body(by="a b c")), "malformed"),
    ],
)
def test_every_bad_command_is_refused(payload: Callable[[], bytes], reason: str) -> None:
    """(Each payload is made when its test runs: a timestamp made at collection would age.)"""
    with pytest.raises(CommandError) as info:
        verify(payload(), SECRET, time.time(), DOORS, SCOPES)
    assert info.value.reason == reason


def test_a_body_changed_after_signing_is_refused() -> None:
    signed = json.loads(message(SECRET, body()))
    signed["body"] = signed["body"].replace("open", "hold")
    with pytest.raises(CommandError, match="signature"):
        verify(json.dumps(signed).encode(), SECRET, time.time(), DOORS, SCOPES)


# ----- over a real broker, to MockFactory doors -----------------------------------------------


@pytest.fixture
def rig(
    tmp_path: Path,
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[..., LiveDaemon],
) -> Iterator[tuple[LiveDaemon, Subscriber, Any]]:
    broker = Broker(tmp_path)
    broker.start()
    secret = tmp_path / "command.secret"
    secret.write_bytes(SECRET + b"\n")
    wire_idle()
    extra = f'commands = true\ncommand_secret_file = "{secret}"\n'
    live = start_live(make_config(doors_toml() + mqtt_toml(broker.port, extra)))
    wire_inputs()
    sub = Subscriber(broker.port, [f"{PREFIX}/replies"], client_id="replies")
    sender = new_client("sender")
    sender.connect("127.0.0.1", broker.port, 30)
    sender.loop_start()
    assert sub.wait(lambda: mqtt_check(live)["connected"])
    yield live, sub, sender
    sender.disconnect()
    sender.loop_stop()
    sub.close()
    live.stop()
    broker.stop()


def mqtt_check(live: LiveDaemon) -> dict[str, Any]:
    return dict(httpx.get(f"{live.admin_url}/readyz").json()["checks"]["mqtt"])


def send(sender: Any, payload: bytes) -> None:
    sender.publish(f"{PREFIX}/commands", payload, qos=1).wait_for_publish(5)


def door_rows(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute("SELECT action, source FROM door_log WHERE source LIKE '%@mqtt'"))
    finally:
        conn.close()


def replies(sub: Subscriber) -> list[dict[str, Any]]:
    return sub.json_on(f"{PREFIX}/replies")


@needs_mosquitto
def test_bad_commands_are_refused_and_nothing_moves(
    rig: tuple[LiveDaemon, Subscriber, Any],
) -> None:
    live, sub, sender = rig
    db = live.daemon.store.path
    pin(LOCK).clear_states()
    good = message(SECRET, body(id="first", nonce="nonce-good-1", by="alice"))
    bad = [
        b"{",
        json.dumps({"body": json.dumps(body(nonce="nonce-unsigned"))}).encode(),
        message(b"wrong-secret-0123456789", body(nonce="nonce-wrong-key")),
        message(SECRET, body(id="stale", nonce="nonce-stale-1", ts=time.time() - 120)),
        message(SECRET, body(id="vault", nonce="nonce-vault-1", door="vault")),
        message(SECRET, body(id="x", nonce="nonce-action-1", action="explode")),
    ]
    for payload in bad:
        send(sender, payload)
    assert sub.wait(lambda: len(replies(sub)) == len(bad))
    assert [r["ok"] for r in replies(sub)] == [False] * len(bad)
    reasons = [r["reason"] for r in replies(sub)]
    assert reasons == [
        "malformed",
        "unsigned",
        "bad-signature",
        "stale",
        "unknown-door",
        "malformed",
    ]
    assert not any(s.state for s in pin(LOCK).states[1:]), "a refused command moved the lock"
    assert door_rows(db) == []
    send(sender, good)
    assert sub.wait(lambda: len(replies(sub)) == len(bad) + 1)
    answer = replies(sub)[-1]
    assert answer["ok"] is True and answer["id"] == "first" and answer["door"]["name"] == "lobby"
    assert any(s.state for s in pin(LOCK).states), "the signed open unlocked the door"
    send(sender, good)  # the same message again: a replay
    assert sub.wait(lambda: len(replies(sub)) == len(bad) + 2)
    assert replies(sub)[-1]["reason"] == "replayed"
    deadline = time.monotonic() + 5
    while not door_rows(db) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert door_rows(db) == [("open", "alice@mqtt")]  # audited once, like the admin API's
    check = mqtt_check(live)
    assert check["commands"]["accepted"] == 1 and check["commands"]["refused"]["replayed"] == 1


@needs_mosquitto
def test_lockdown_by_command_is_audited_and_refuses_an_open(
    rig: tuple[LiveDaemon, Subscriber, Any],
) -> None:
    live, sub, sender = rig
    send(
        sender,
        message(SECRET, body(action="lockdown", on=True, door=None, nonce="lock-on-1", by="ops")),
    )
    assert sub.wait(lambda: len(replies(sub)) == 1)
    assert replies(sub)[0]["ok"] is True and replies(sub)[0]["mode"]["lockdown"] is True
    assert live.call(lambda: live.daemon.doors.lockdown) is True
    pin(LOCK).clear_states()
    send(sender, message(SECRET, body(nonce="open-in-lockdown")))
    assert sub.wait(lambda: len(replies(sub)) == 2)
    assert replies(sub)[1]["ok"] is False and replies(sub)[1]["reason"] == "refused"
    assert not any(s.state for s in pin(LOCK).states[1:])
    conn = sqlite3.connect(live.daemon.store.path)
    rows = list(conn.execute("SELECT by, scope, mode, state FROM mode_changes"))
    conn.close()
    assert rows == [("ops@mqtt", "*", "lockdown", "on")]


@needs_mosquitto
@pytest.mark.parametrize("enabled", [False, True])
def test_home_assistant_commands_only_when_enabled(
    enabled: bool,
    tmp_path: Path,
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[..., LiveDaemon],
) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        wire_idle()
        extra = f"homeassistant = true\nhomeassistant_commands = {str(enabled).lower()}\n"
        live = start_live(make_config(doors_toml() + mqtt_toml(broker.port, extra)))
        wire_inputs()
        sub = Subscriber(broker.port, [f"{PREFIX}/#"], client_id="ha-cmd", persistent=False)
        assert sub.wait(lambda: mqtt_check(live)["connected"])
        time.sleep(0.3)  # edged's subscriptions follow its connect
        pin(LOCK).clear_states()
        ha = new_client("home-assistant")
        ha.connect("127.0.0.1", broker.port, 30)
        ha.loop_start()
        ha.publish(f"{PREFIX}/ha/doors/lobby/set", b"UNLOCK", qos=1).wait_for_publish(5)
        ha.publish(f"{PREFIX}/ha/doors/vault/set", b"UNLOCK", qos=1).wait_for_publish(5)
        ha.publish(f"{PREFIX}/ha/lockdown/set", b"ON", qos=1).wait_for_publish(5)
        if enabled:
            assert sub.wait(lambda: sub.on(f"{PREFIX}/lockdown")[-1:] == [b"ON"])
            assert any(s.state for s in pin(LOCK).states), "HA's unlock opened the door"
            assert live.call(lambda: live.daemon.doors.lockdown) is True
            refused = mqtt_check(live)["commands"]["refused"]
            assert refused == {"unknown-door": 1}
        else:
            time.sleep(1.0)
            assert not any(s.state for s in pin(LOCK).states[1:])
            assert live.call(lambda: live.daemon.doors.lockdown) is False
            assert sub.on(f"{PREFIX}/lockdown")[-1:] == [b"OFF"]
        want = [("open", "homeassistant@mqtt")] if enabled else []
        assert sub.wait(lambda: door_rows(live.daemon.store.path) == want, 5)
        ha.disconnect()
        ha.loop_stop()
        sub.close()
        live.stop()
    finally:
        broker.stop()
