"""Home Assistant discovery: the fields and types HA reads, retained, removed with the config."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory

from edged.config import Config
from edged.mqtt import discovery, payloads
from tests.conftest import LiveDaemon
from tests.doorfix import doors_toml, wire_idle, wire_inputs
from tests.mqttfix import Broker, Subscriber, mqtt_toml, needs_mosquitto

HA = "homeassistant"
PREFIX = "edged/test_site"
SIDE = """
[[terminals]]
name = "side-door"
serial = "SIDE0001"
door = "side"

[[doors]]
name = "side"
lock = { pin = 5 }
"""
# What Home Assistant's MQTT platforms read (home-assistant.io/integrations/<component>.mqtt):
# required keys and their types, beside the common ones every entry carries.
STR, LIST = str, list
REQUIRED: dict[str, dict[str, type]] = {
    "lock": {
        "command_topic": STR,
        "state_topic": STR,
        "payload_lock": STR,
        "payload_unlock": STR,
        "payload_open": STR,
        "state_locked": STR,
        "state_unlocked": STR,
        "value_template": STR,
    },
    "binary_sensor": {"state_topic": STR, "payload_on": STR, "payload_off": STR},
    "sensor": {"state_topic": STR, "device_class": STR, "value_template": STR},
    "event": {"state_topic": STR, "event_types": LIST},
    "switch": {"command_topic": STR, "state_topic": STR, "payload_on": STR, "payload_off": STR},
}
COMMON = {
    "name": STR,
    "unique_id": STR,
    "availability_topic": STR,
    "payload_available": STR,
    "payload_not_available": STR,
    "device": dict,
}
BINARY_CLASSES = {"lock", "door", "connectivity", None}
TOPIC = re.compile(rf"{HA}/(\w+)/edged_test_site/([A-Za-z0-9_-]+)/config")


def check_entry(topic: str, entry: dict[str, Any]) -> str:
    match = TOPIC.fullmatch(topic)
    assert match, topic
    component = match.group(1)
    for key, kind in {**COMMON, **REQUIRED[component]}.items():
        assert isinstance(entry.get(key), kind), (topic, key, entry.get(key))
    assert entry["unique_id"] == f"edged_test_site_{match.group(2)}"
    assert entry["availability_topic"] == f"{PREFIX}/availability"
    device = entry["device"]
    assert isinstance(device["identifiers"], list) and device["identifiers"] == ["edged_test_site"]
    assert isinstance(device["name"], str) and isinstance(device["sw_version"], str)
    if component == "binary_sensor":
        assert entry.get("device_class") in BINARY_CLASSES
    if component == "sensor":
        assert entry["device_class"] == "timestamp"
    if component == "event":
        assert entry["event_types"] and all(isinstance(t, str) for t in entry["event_types"])
    return component


def test_discovery_payloads_have_the_fields_and_types_home_assistant_reads(
    make_config: Callable[..., Config], mock_factory: MockFactory
) -> None:
    for commands in (False, True):
        extra = f"homeassistant = true\nhomeassistant_commands = {str(commands).lower()}\n"
        cfg = make_config(doors_toml() + mqtt_toml(1883, extra))
        entries = discovery.entries(cfg, payloads.Topics(cfg))
        kinds = sorted(check_entry(t, e) for t, e in entries.items())
        lock = "lock" if commands else "binary_sensor"
        switch = "switch" if commands else "binary_sensor"
        # lobby: lock, contact, last access, event; old-gate (a terminal's door): last access,
        # event; three terminals' connectivity; the lockdown
        expected = [lock, "binary_sensor", "sensor", "event", "sensor", "event"]
        expected += ["binary_sensor"] * 3 + [switch]
        assert kinds == sorted(expected)
        ids = [e["unique_id"] for e in entries.values()]
        assert len(set(ids)) == len(ids)


@needs_mosquitto
def test_entries_retained_and_removed_when_a_door_leaves(
    tmp_path: Path,
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[..., LiveDaemon],
) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        extra = "homeassistant = true\nhomeassistant_commands = true\n"
        wire_idle()
        wide = make_config(doors_toml() + SIDE + mqtt_toml(broker.port, extra))
        live = start_live(wide)
        wire_inputs()
        wanted = discovery.entries(wide, payloads.Topics(wide))
        side = [t for t in wanted if "side" in t]
        assert len(side) == 4  # the side door's lock, last access and event; its terminal
        sub = Subscriber(broker.port, [f"{HA}/#", f"{PREFIX}/#"], client_id="ha", persistent=False)
        assert sub.wait(lambda: all(sub.on(t) for t in wanted))
        for topic, entry in wanted.items():
            assert json.loads(sub.on(topic)[-1]) == entry
        # what the state topics carry matches what the entries tell HA to expect
        lobby = f"{PREFIX}/doors/lobby/state"
        assert sub.wait(lambda: bool(sub.json_on(lobby)) and not sub.json_on(lobby)[-1]["fire"])
        state = sub.json_on(lobby)[-1]
        assert state["lock"] == "LOCKED" and state["contact"] == "closed"
        assert sub.on(f"{PREFIX}/lockdown")[-1] == b"OFF"
        sub.close()
        live.stop()
        # restarted without the side door and its terminal: their entries are removed
        wire_idle()
        narrow = make_config(doors_toml() + mqtt_toml(broker.port, extra))
        live = start_live(narrow)
        wire_inputs()
        gone = Subscriber(broker.port, [f"{HA}/#"], client_id="ha2", persistent=False)

        def removed() -> bool:
            return all(gone.on(t) and gone.on(t)[-1] == b"" for t in side)

        assert gone.wait(removed, 15)
        gone.close()
        live.stop()
        # at start only what is configured remains (a fresh subscriber gets the retained set)
        live = start_live(narrow)
        fresh = Subscriber(broker.port, [f"{HA}/#"], client_id="ha3", persistent=False)
        still = set(discovery.entries(narrow, payloads.Topics(narrow)))
        assert fresh.wait(lambda: {t for t, p, r in fresh.messages if r and p} == still)
        fresh.close()
        live.stop()
    finally:
        broker.stop()


@needs_mosquitto
def test_a_reload_removes_the_entries_of_a_door_that_left(
    tmp_path: Path,
    make_config: Callable[..., Config],
    mock_factory: MockFactory,
    start_live: Callable[..., LiveDaemon],
) -> None:
    broker = Broker(tmp_path)
    broker.start()
    try:
        wire_idle()
        wide = make_config(doors_toml() + SIDE + mqtt_toml(broker.port, "homeassistant = true\n"))
        narrow = make_config(doors_toml() + mqtt_toml(broker.port, "homeassistant = true\n"))
        live = start_live(wide)
        side = [t for t in discovery.entries(wide, payloads.Topics(wide)) if "side" in t]
        sub = Subscriber(broker.port, [f"{HA}/#"], client_id="ha-reload", persistent=False)
        assert sub.wait(lambda: all(sub.on(t) for t in side))
        for reloader in live.daemon.reloaders:  # what SIGHUP does with the new configuration
            live.call(lambda r=reloader: r(narrow))
        assert sub.wait(lambda: all(sub.on(t)[-1] == b"" for t in side))
        sub.close()
        live.stop()
    finally:
        broker.stop()
