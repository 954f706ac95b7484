"""A fleet: a site broker bridged to a central one (docs/fleet.md); either may go down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from edged.config import Config
from tests.conftest import LiveDaemon, recognition
from tests.mqttfix import Broker, Subscriber, mqtt_toml, needs_mosquitto, unique_in_order

pytestmark = needs_mosquitto


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
topic edged/{site}/# out 1
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
