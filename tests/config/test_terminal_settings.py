"""Terminal clocks and settings in the configuration: off when absent, checked at load."""

from __future__ import annotations

import pytest

from edged import config
from edged.errors import ConfigError
from edged.terminals import settings as desired

TERMINAL = '[[terminals]]\nname = "lobby"\nserial = "S1"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.parse(text, "t.toml")
    return caught.value.problems


def test_absent_means_off_and_nothing_chosen() -> None:
    cfg = config.parse(TERMINAL)
    assert cfg.terminal_clock.mode == "off"
    assert cfg.terminal_settings.chosen() == {} and cfg.terminals[0].settings.chosen() == {}


def test_terminal_settings_win_key_by_key_over_the_site() -> None:
    cfg = config.parse(
        "[terminal_settings]\nkeep_door_open_duration = 10\ntamper_alarm = false\n"
        + TERMINAL
        + "[terminals.settings]\nkeep_door_open_duration = 20\nverify_threshold = 0.8\n"
    )
    assert desired.effective(cfg, cfg.terminals[0]).chosen() == {
        "keep_door_open_duration": 20,
        "tamper_alarm": False,
        "verify_threshold": 0.8,
    }


def test_every_out_of_range_value_is_refused_at_once() -> None:
    found = problems(
        "[terminal_settings]\n"
        "keep_door_open_duration = 31\n"
        'gpio_b = "doorbell"\n'
        'reboot_time = "24:00"\n'
        "liveness_threshold = 1\n"
        "resign_interval = -1\n"
        "remote_auth_fallback_minutes = 61\n"
        'tamper_alarm = "yes"\n'
        + TERMINAL
        + "settings = { keep_door_open_duration = 0, verify_threshold = 0.0 }\n"
    )
    assert found == [
        "t.toml: terminal_settings.keep_door_open_duration (line 2): must be 1-30 s",
        "t.toml: terminal_settings.gpio_b (line 3): 'doorbell' is not one of 'none', "
        "'door_contact', 'exit_button', 'fire'",
        "t.toml: terminal_settings.reboot_time (line 4): '24:00' is not a time of day such as "
        "'02:00:00'",
        "t.toml: terminal_settings.liveness_threshold (line 5): must be between 0 and 1 "
        "(both excluded)",
        "t.toml: terminal_settings.resign_interval (line 6): must be 0-1800 s",
        "t.toml: terminal_settings.remote_auth_fallback_minutes (line 7): must be 0-60 minutes "
        "(0: never)",
        "t.toml: terminal_settings.tamper_alarm (line 8): must be true or false, not a string",
        "t.toml: terminals[0].settings.keep_door_open_duration (line 12): must be 1-30 s",
        "t.toml: terminals[0].settings.verify_threshold (line 12): must be between 0 and 1 "
        "(both excluded)",
    ]


def test_clock_modes_and_their_server() -> None:
    assert problems('[terminal_clock]\nmode = "ntp"\n') == [
        "t.toml: terminal_clock.ntp_server: required when mode is 'ntp'"
    ]
    assert problems('[terminal_clock]\nmode = "manual"\nntp_server = "10.0.0.1"\n') == [
        "t.toml: terminal_clock.ntp_server: only used when mode is 'ntp'"
    ]
    assert "'sometimes' is not one of" in problems('[terminal_clock]\nmode = "sometimes"\n')[0]
    assert problems('[terminal_clock]\nmode = "manual"\nmax_drift = 2\nset_above = 2\n') == [
        "t.toml: terminal_clock.set_above: must be below the drift alarm (2 s: max_drift, or "
        "half of receiver.stale_after), or a drifting clock is alarmed and never set"
    ]
    cfg = config.parse('[terminal_clock]\nmode = "ntp"\nntp_server = "10.0.0.1"\nmax_drift = 5\n')
    assert cfg.terminal_clock.ntp_server == "10.0.0.1" and cfg.terminal_clock.max_drift == 5.0


def test_the_fallback_timeout_is_set_once_a_terminal() -> None:
    found = problems(
        TERMINAL
        + "remote_auth_fallback_minutes = 5\nsettings = { remote_auth_fallback_minutes = 9 }\n"
    )
    assert found == [
        "t.toml: terminals[0].settings.remote_auth_fallback_minutes: also set as "
        "terminals[0].remote_auth_fallback_minutes; set one"
    ]
