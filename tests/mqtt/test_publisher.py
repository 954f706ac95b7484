"""Records and states to a real Mosquitto: in order, acknowledged, nothing lost across outages."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from edged.config import Config
from edged.store import mqttstate
from tests.conftest import SERIAL, LiveDaemon, recognition
from tests.doorfix import DOOR_SERIAL, doors_toml, wire_idle, wire_inputs
from tests.mqttfix import Broker, Subscriber, mqtt_toml, needs_mosquitto, unique_in_order

pytestmark = needs_mosquitto

PREFIX = "edged/test_site"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def push(live: LiveDaemon, first: int, count: int) -> None:
    with httpx.Client(base_url=live.url) as client:
        for i in range(first, first + count):
            assert client.post("/eventRcv", json=recognition(uuid=f"r{i}")).status_code == 200


def cursor(cfg: Config) -> int:
    conn = sqlite3.connect(cfg.storage.database_path)
    try:
        return mqttstate.cursor(conn)
    finally:
        conn.close()


def test_records_and_states_published_in_order(
    broker: Broker, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    cfg = make_config(mqtt_toml(broker.port))
    sub = Subscriber(broker.port, [f"{PREFIX}/#"])
    live = start_live(cfg)
    push(live, 0, 20)
    assert sub.wait(lambda: len(sub.on(f"{PREFIX}/records")) >= 20)
    records = sub.json_on(f"{PREFIX}/records")
    assert [r["id"] for r in records] == list(range(1, 21))
    first = records[0]
    assert first["kind"] == "recognition" and first["serial"] == SERIAL
    assert first["terminal"] == "lobby" and first["gateway"] == "test_site"
    assert isinstance(first["key"], str) and first["key"]
    assert "image" not in first  # no face image unless configured
    assert sub.on(f"{PREFIX}/availability")[-1] == b"online"
    terminal = f"{PREFIX}/terminals/lobby/state"
    assert sub.wait(lambda: bool(sub.json_on(terminal)) and sub.json_on(terminal)[-1]["online"])
    state = sub.json_on(terminal)[-1]
    assert state["serial"] == SERIAL and state["state"] == "ON" and state["last_heard"]
    assert sub.wait(lambda: sub.on(f"{PREFIX}/lockdown") == [b"OFF"])
    assert sub.wait(lambda: cursor(cfg) == 20), "the cursor follows the acknowledgements"
    live.stop()
    assert sub.wait(lambda: sub.on(f"{PREFIX}/availability")[-1] == b"offline")
    sub.close()


def test_broker_restart_mid_stream_loses_nothing(
    broker: Broker, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    """The subscriber's persistent session spans the restart: every record arrives, first
    copies in order; a second copy only ever carries its first copy's key and id."""
    cfg = make_config(mqtt_toml(broker.port))
    sub = Subscriber(broker.port, [f"{PREFIX}/records"], client_id="restart-sub")
    live = start_live(cfg)
    push(live, 0, 60)
    broker.stop()  # mid-stream: some records acknowledged, some in flight, some not sent
    push(live, 60, 60)
    assert live.daemon.store.stats.records == 120  # records were stored all along
    broker.start()
    push(live, 120, 30)
    expected = list(range(1, 151))
    assert sub.wait(lambda: unique_in_order(sub.json_on(f"{PREFIX}/records")) == expected, 40)
    by_key: dict[str, int] = {}
    for r in sub.json_on(f"{PREFIX}/records"):
        assert by_key.setdefault(r["key"], r["id"]) == r["id"]
    assert sub.wait(lambda: cursor(cfg) == 150, 20)
    sub.close()
    live.stop()


def test_outage_across_an_edged_restart_loses_nothing(
    tmp_path: Path, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    broker = Broker(tmp_path)  # not started: the broker is down from the beginning
    cfg = make_config(mqtt_toml(broker.port))
    live = start_live(cfg)
    push(live, 0, 40)  # answered at once: the broker being down delays nothing
    assert httpx.get(f"{live.admin_url}/readyz").json()["checks"]["mqtt"]["connected"] is False
    live.stop()
    assert cursor(cfg) == 0
    broker.start()
    try:
        sub = Subscriber(broker.port, [f"{PREFIX}/records"], client_id="late-sub")
        live = start_live(cfg)
        assert sub.wait(
            lambda: unique_in_order(sub.json_on(f"{PREFIX}/records")) == list(range(1, 41))
        )
        assert sub.wait(lambda: cursor(cfg) == 40)
        ready = httpx.get(f"{live.admin_url}/readyz").json()["checks"]["mqtt"]
        assert ready["connected"] is True and ready["published_up_to"] == 40
        sub.close()
    finally:
        broker.stop()


def test_the_cursor_moves_only_on_the_brokers_acknowledgement(
    broker: Broker, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    cfg = make_config(mqtt_toml(broker.port))
    live = start_live(cfg)
    push(live, 0, 5)
    sub = Subscriber(broker.port, [f"{PREFIX}/records"], client_id="ack-sub", persistent=False)
    assert sub.wait(lambda: cursor(cfg) == 5)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)  # frozen: the connection stays, no PUBACK comes
    try:
        push(live, 5, 10)  # answered at once all the same
        time.sleep(1.0)
        check = httpx.get(f"{live.admin_url}/readyz").json()["checks"]["mqtt"]
        assert cursor(cfg) == 5 and check["acknowledged_up_to"] == 5
        assert check["in_flight"] == 10 and check["depth"] == 10
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    assert sub.wait(lambda: cursor(cfg) == 15)
    assert unique_in_order(sub.json_on(f"{PREFIX}/records")) == list(range(6, 16))
    sub.close()


@pytest.mark.parametrize("images", [False, True])
def test_the_face_image_only_when_configured(
    images: bool,
    broker: Broker,
    make_config: Callable[..., Config],
    start_live: Callable[..., LiveDaemon],
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"face " * 200 + b"\xff\xd9"
    extra = f"include_images = {str(images).lower()}\n"
    live = start_live(make_config(mqtt_toml(broker.port, extra)))
    sub = Subscriber(broker.port, [f"{PREFIX}/records"], client_id="img", persistent=False)
    body = recognition(uuid="with-face", rgb_image=base64.b64encode(jpeg).decode())
    assert httpx.post(f"{live.url}/eventRcv", json=body).status_code == 200
    assert sub.wait(lambda: bool(sub.json_on(f"{PREFIX}/records")))
    record = sub.json_on(f"{PREFIX}/records")[0]
    if images:
        assert base64.b64decode(record["image"]) == jpeg
    else:
        assert "image" not in record
    assert "rgb_image" not in json.dumps(record)  # never the terminal's raw payload
    sub.close()


def test_a_live_record_at_a_door_is_its_event_and_last_access(
    broker: Broker,
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[..., LiveDaemon],
) -> None:
    wire_idle()
    live = start_live(make_config(doors_toml() + mqtt_toml(broker.port)))
    wire_inputs()
    sub = Subscriber(broker.port, [f"{PREFIX}/doors/#"], client_id="door-sub", persistent=False)
    body = recognition(serial=DOOR_SERIAL, uuid="at-the-door")
    assert httpx.post(f"{live.url}/eventRcv", json=body).status_code == 200
    event_topic, last_topic = f"{PREFIX}/doors/lobby/event", f"{PREFIX}/doors/lobby/last_access"
    assert sub.wait(lambda: bool(sub.json_on(event_topic)) and bool(sub.json_on(last_topic)))
    event = sub.json_on(event_topic)[0]
    assert event["event_type"] == "record" and event["terminal"] == "lobby-door"
    last = sub.json_on(last_topic)[-1]
    assert last["key"] == event["key"] and last["at"].endswith("+00:00")
    sub.close()


def test_broker_killed_with_records_in_flight_loses_nothing(
    broker: Broker, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    """SIGKILL while records are on the wire and not acknowledged (the broker frozen first, so
    that none of them was taken): after the restart edged sends them again, in order."""
    cfg = make_config(mqtt_toml(broker.port))
    live = start_live(cfg)
    sub = Subscriber(broker.port, [f"{PREFIX}/records"], client_id="kill-sub", persistent=False)
    push(live, 0, 10)
    assert sub.wait(lambda: cursor(cfg) == 10)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    push(live, 10, 20)
    assert sub.wait(lambda: check(live)["in_flight"] == 20)
    broker.stop(signal.SIGKILL)
    push(live, 30, 10)
    assert cursor(cfg) == 10
    broker.start()
    assert sub.wait(lambda: unique_in_order(sub.json_on(f"{PREFIX}/records")) == list(range(1, 41)))
    assert sub.wait(lambda: cursor(cfg) == 40)
    sub.close()


def check(live: LiveDaemon) -> dict[str, Any]:
    return dict(httpx.get(f"{live.admin_url}/readyz").json()["checks"]["mqtt"])


def test_qos_2_moves_the_cursor_on_pubcomp(
    broker: Broker, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    cfg = make_config(mqtt_toml(broker.port, "qos = 2\n"))
    live = start_live(cfg)
    sub = Subscriber(broker.port, [f"{PREFIX}/records"], client_id="qos2", persistent=False)
    push(live, 0, 5)
    assert sub.wait(lambda: cursor(cfg) == 5)
    assert sub.wait(lambda: unique_in_order(sub.json_on(f"{PREFIX}/records")) == [1, 2, 3, 4, 5])
    sub.close()
