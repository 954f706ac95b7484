"""Home Assistant MQTT discovery: the entities of one gateway, as retained config messages.

Topic: ``<homeassistant_prefix>/<component>/edged_<gateway>/<object id>/config``. Per door a
lock (a ``lock`` when Home Assistant may command, else a ``binary_sensor`` of class ``lock``), a
door contact (``binary_sensor``, class ``door``, when a contact is fitted), a last-access sensor
(``sensor``, class ``timestamp``) and an ``event`` entity; per terminal a connectivity sensor;
the site's lockdown (a ``switch`` when Home Assistant may command, else a ``binary_sensor``).
Every entity names the gateway's availability topic and one device block. An entity whose door
or terminal left the configuration is removed with an empty retained message (docs/mqtt.md).
"""

from __future__ import annotations

from typing import Any

import edged
from edged.access.model import door_names
from edged.config import Config
from edged.mqtt.payloads import EVENT_TYPES, Topics

HA_LOCKED, HA_UNLOCKED = "LOCKED", "UNLOCKED"


def node(topics: Topics) -> str:
    return f"edged_{topics.gateway}"


def subscription(cfg: Config, topics: Topics) -> str:
    """The wildcard that reads back this gateway's retained discovery entries."""
    return f"{cfg.mqtt.homeassistant_prefix}/+/{node(topics)}/+/config"


def entries(cfg: Config, topics: Topics) -> dict[str, dict[str, Any]]:
    """Every discovery topic of the configuration and its config payload."""
    mq = cfg.mqtt
    commands = mq.homeassistant_commands
    base = node(topics)
    device = {
        "identifiers": [base],
        "name": f"edged {cfg.site.name}",
        "manufacturer": "edged",
        "model": "edged gateway",
        "sw_version": edged.__version__,
    }
    common = {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    out: dict[str, dict[str, Any]] = {}

    def add(component: str, obj: str, name: str, body: dict[str, Any]) -> None:
        topic = f"{mq.homeassistant_prefix}/{component}/{base}/{obj}/config"
        out[topic] = {"name": name, "unique_id": f"{base}_{obj}", **body, **common}

    hardware = {d.name: d for d in cfg.doors}
    for door in sorted(door_names(cfg)):
        state = topics.door(door, "state")
        if door in hardware:
            lock = {"state_topic": state, "value_template": "{{ value_json.lock }}"}
            if commands:
                lock |= {
                    "command_topic": topics.ha_door(door),
                    "payload_lock": "LOCK",
                    "payload_unlock": "UNLOCK",
                    "payload_open": "OPEN",
                    "state_locked": HA_LOCKED,
                    "state_unlocked": HA_UNLOCKED,
                }
                add("lock", f"door_{door}_lock", f"{door} lock", lock)
            else:  # class lock: "on" means unlocked
                lock |= {
                    "device_class": "lock",
                    "payload_on": HA_UNLOCKED,
                    "payload_off": HA_LOCKED,
                }
                add("binary_sensor", f"door_{door}_lock", f"{door} lock", lock)
            if hardware[door].contact.pin is not None:
                contact = {
                    "state_topic": state,
                    "value_template": "{{ value_json.contact }}",
                    "device_class": "door",
                    "payload_on": "open",
                    "payload_off": "closed",
                }
                add("binary_sensor", f"door_{door}_contact", f"{door} door", contact)
        last = {
            "state_topic": topics.door(door, "last_access"),
            "value_template": "{{ value_json.at }}",
            "device_class": "timestamp",
            "json_attributes_topic": topics.door(door, "last_access"),
        }
        add("sensor", f"door_{door}_last_access", f"{door} last access", last)
        event = {"state_topic": topics.door(door, "event"), "event_types": list(EVENT_TYPES)}
        add("event", f"door_{door}_access", f"{door} access", event)
    for terminal in cfg.terminals:
        connectivity = {
            "state_topic": topics.terminal(terminal.name),
            "value_template": "{{ value_json.state }}",
            "device_class": "connectivity",
            "payload_on": "ON",
            "payload_off": "OFF",
        }
        add("binary_sensor", f"terminal_{terminal.name}", f"{terminal.name} terminal", connectivity)
    lockdown: dict[str, Any] = {"state_topic": topics.lockdown}
    if commands:
        lockdown |= {
            "command_topic": topics.ha_lockdown_set,
            "payload_on": "ON",
            "payload_off": "OFF",
            "state_on": "ON",
            "state_off": "OFF",
        }
        add("switch", "lockdown", "lockdown", lockdown)
    else:
        lockdown |= {"payload_on": "ON", "payload_off": "OFF"}
        add("binary_sensor", "lockdown", "lockdown", lockdown)
    return out
