"""A fleet: a site broker bridged to a central one (docs/fleet.md); either may go down."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
from gpiozero.pins.mock import MockFactory

from edged.config import Config
from edged.mqtt.commands import message
from edged.mqtt.link import new_client
from tests.conftest import LiveDaemon, recognition
from tests.doorfix import doors_toml, wire_idle, wire_inputs
from tests.mqttfix import Broker, Subscriber, mqtt_toml, needs_mosquitto, unique_in_order

pytestmark = needs_mosquitto
SECRET = b"fleet-gateway-gw1-secret"


def bridge(central: Broker, site: str) -> str:
    """The site broker's bridge to the central one, as docs/fleet.md gives it."""
    return f"""
connection central
address 127.0.0.1:{central.port}
remote_clientid bridge-{site}
local_clientid bridge-{site}-local
cleansession false
bridge_protocol_version mqttv311
restart_timeout 1
notifications false
topic edged/{site}/+/records out 1
topic edged/{site}/+/availability out 1
topic edged/{site}/+/replies out 1
topic edged/{site}/+/modes out 1
topic edged/{site}/+/lockdown out 1
topic edged/{site}/+/doors/# out 1
topic edged/{site}/+/terminals/# out 1
topic edged/{site}/+/commands in 1
"""


def push(live: LiveDaemon, first: int, count: int) -> None:
    with httpx.Client(base_url=live.url) as client:
        for i in range(first, first + count):
            assert client.post("/eventRcv", json=recognition(uuid=f"f{i}")).status_code == 200


def test_site_and_central_brokers_down_and_up_nothing_lost_end_to_end(
    tmp_path: Path, make_config: Callable[..., Config], start_live: Callable[..., LiveDaemon]
) -> None:
    central = Broker(tmp_path, "central")
    site = Broker(tmp_path, "site", extra=bridge(central, "site1"))
    central.start()
    site.start()
    try:
        cfg = make_config(mqtt_toml(site.port, 'topic_prefix = "edged/site1/gw1"\n'))
        sub = Subscriber(central.port, ["edged/+/+/records"], client_id="central-consumer")
        live = start_live(cfg)
        topic = "edged/site1/gw1/records"
        push(live, 0, 60)
        assert sub.wait(lambda: len(set(unique_in_order(sub.json_on(topic)))) >= 1)
        site.stop()  # the site broker down: edged keeps the records
        push(live, 60, 60)
        site.start()
        push(live, 120, 30)
        central.stop()  # the central broker down: the bridge queues them
        push(live, 150, 60)
        central.start()
        push(live, 210, 30)
        expected = list(range(1, 241))
        assert sub.wait(lambda: unique_in_order(sub.json_on(topic)) == expected, 60), (
            f"{len(set(unique_in_order(sub.json_on(topic))))} of 240 arrived"
        )
        by_key: dict[str, int] = {}
        for r in sub.json_on(topic):
            assert by_key.setdefault(r["key"], r["id"]) == r["id"]
        sub.close()
        live.stop()
    finally:
        site.stop()
        central.stop()


def test_a_signed_command_from_the_centre_reaches_the_gateway_and_is_answered(
    tmp_path: Path,
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[..., LiveDaemon],
) -> None:
    central = Broker(tmp_path, "central")
    site = Broker(tmp_path, "site", extra=bridge(central, "site1"))
    central.start()
    site.start()
    try:
        secret = tmp_path / "gw1.secret"
        secret.write_bytes(SECRET)
        extra = (
            f'topic_prefix = "edged/site1/gw1"\ncommands = true\ncommand_secret_file = "{secret}"\n'
        )
        wire_idle()
        live = start_live(make_config(doors_toml() + mqtt_toml(site.port, extra)))
        wire_inputs()
        replies = Subscriber(central.port, ["edged/site1/gw1/replies"], client_id="centre")
        sender = new_client("centre-sender")
        sender.connect("127.0.0.1", central.port, 30)
        sender.loop_start()
        deadline = time.monotonic() + 20

        def answered() -> bool:
            return bool(replies.json_on("edged/site1/gw1/replies"))

        n = 0
        while not answered() and time.monotonic() < deadline:  # until the bridge carries it
            n += 1
            body = {
                "action": "open",
                "door": "lobby",
                "ts": time.time(),
                "nonce": f"centre-{n:04d}",
            }
            sender.publish("edged/site1/gw1/commands", message(SECRET, body), qos=1)
            replies.wait(answered, 1.0)
        answer = replies.json_on("edged/site1/gw1/replies")[0]
        assert answer["ok"] is True and answer["door"]["name"] == "lobby"
        sender.disconnect()
        sender.loop_stop()
        replies.close()
        live.stop()
    finally:
        site.stop()
        central.stop()
