"""Configuration validation of the door keys: every problem reported at once, with its path."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edged import config
from edged.config import Config
from edged.errors import ConfigError


def problems(make_config: Callable[..., Config], extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        make_config(extra)
    return info.value.problems


def test_a_full_door_section_parses(make_config: Callable[..., Config]) -> None:
    cfg = make_config(
        """
[gpio]
pin_factory = "mock"
[[doors]]
name = "lobby"
lock = { pin = 17, active_high = false, kind = "fail_safe" }
unlock_time = 4
contact = { pin = 27 }
alarm_actions = { tamper = "release", 10004 = "siren" }
[siren]
pin = 23
[fire]
pin = 24
active_high = false
"""
    )
    door = cfg.doors[0]
    assert door.lock.kind == "fail_safe" and door.unlock_time == 4.0 and door.rex.pin is None
    assert door.alarm_action(10001) == "release"  # by name
    assert door.alarm_action(10004) == "siren"  # by number
    assert door.alarm_action(10002) == "siren"  # default for forced
    assert door.alarm_action(20003) == "log" and door.alarm_action(42) == "log"
    assert cfg.door_by_name("lobby") is door and cfg.door_by_name("x") is None
    printed = config.to_toml(config.to_dict(cfg))
    assert "None" not in printed
    assert config.parse(printed).doors == cfg.doors  # the effective config reads back


def test_every_door_problem_is_reported(make_config: Callable[..., Config]) -> None:
    found = problems(
        make_config,
        """
[[doors]]
name = "a"
lock = { pin = 17 }
contact = { pin = 17 }
unlock_time = 90
[[doors]]
name = "a"
lock = { pin = 40, kind = "magic" }
alarm_actions = { tamper = "explode", smoke = "log" }
[siren]
pin = 17
""",
    )
    text = "\n".join(found)
    assert "doors[1].lock.pin (line" in text and "not a GPIO number" in text
    assert "doors[1].lock.kind" in text
    assert "doors[1].alarm_actions" in text
    # the cross checks run once the types are right
    fixed = problems(
        make_config,
        """
[[doors]]
name = "a"
lock = { pin = 17 }
contact = { pin = 17 }
unlock_time = 90
[[doors]]
name = "a"
lock = {}
[siren]
pin = 17
""",
    )
    assert any("doors[0].unlock_time: must not exceed" in p for p in fixed)
    assert any("doors[1].name: 'a' is used twice" in p for p in fixed)
    assert any("doors[1].lock.pin: is required" in p for p in fixed)
    assert any(
        "doors[0].contact.pin: GPIO 17 is already used by doors[0].lock.pin" in p for p in fixed
    )
    assert any("siren.pin: GPIO 17 is already used" in p for p in fixed)


def test_terminal_door_must_exist_once_doors_are_configured(
    make_config: Callable[..., Config],
) -> None:
    terminal = '\n[[terminals]]\nname = "side"\nserial = "SIDE1"\ndoor = "side"\n'
    assert make_config(terminal).terminals[2].door == "side"  # no doors: not checked
    found = problems(make_config, terminal + '\n[[doors]]\nname = "lobby"\nlock = { pin = 5 }\n')
    assert found == ["test.toml: terminals[2].door: 'side' is not a configured door (lobby)"]


def test_unknown_door_key_suggests(make_config: Callable[..., Config]) -> None:
    found = problems(make_config, '\n[[doors]]\nname = "a"\nlock = { pin = 5 }\nunlock_tme = 3\n')
    assert "did you mean 'unlock_time'?" in found[0]
