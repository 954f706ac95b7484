"""Configuration: typed values, every error at once, line numbers, did-you-mean, masking."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edged import config
from edged.cli import main as cli
from edged.config import Config
from edged.errors import ConfigError

BAD = """\
[reciever]
listen = ["0.0.0.0:1"]

[receiver]
max_body_bytes = "big"
stale_afer = 3
listen = ["nonsense"]
allowed_networks = ["10.0.0.0/33"]

[site]
timezone = "Mars/Olympus"

[storage]
retention_days = -1

[logging]
level = "chatty"

[[terminals]]
name = "Lobby Door"
serial = "X1"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.parse(text, "t.toml")
    return info.value.problems


def test_defaults_are_valid() -> None:
    cfg = config.parse("", "empty.toml")
    assert cfg.receiver.max_body_bytes == 2 * 1024 * 1024
    assert cfg.receiver.stale_after == 30
    assert cfg.storage.database_path == Path("/var/lib/edged/edged.db")
    assert cfg.admin.listen == ["127.0.0.1:8091"]


def test_every_error_is_reported_at_once_with_lines() -> None:
    found = problems(BAD)
    expected = [
        "t.toml: reciever (line 1): unknown key; did you mean 'receiver'?",
        "t.toml: receiver.max_body_bytes (line 5): must be an integer, not a string",
        "t.toml: receiver.stale_afer (line 6): unknown key; did you mean 'stale_after'?",
        "t.toml: receiver.listen (line 7): 'nonsense' is not HOST:PORT",
        "t.toml: receiver.allowed_networks (line 8): '10.0.0.0/33' is not an IP network",
        "t.toml: site.timezone (line 11): 'Mars/Olympus' is not an IANA time zone",
        "t.toml: storage.retention_days (line 14): must be greater than 0",
        "t.toml: logging.level (line 17): 'chatty' is not one of",
        "t.toml: terminals[0].name (line 20): 'Lobby Door': use lower-case letters",
    ]
    assert len(found) == len(expected), found
    for want, got in zip(expected, found, strict=True):
        assert got.startswith(want), (want, got)


def test_toml_syntax_error() -> None:
    assert problems("[site\nname=1")[0].startswith("t.toml: not valid TOML")


def test_duplicate_terminals_and_same_paths() -> None:
    text = """
[receiver]
event_path = "/x"
auth_path = "/x"
[[terminals]]
name = "a"
serial = "S1"
[[terminals]]
name = "a"
serial = "S1"
"""
    found = problems(text)
    assert "t.toml: terminals[1].name: 'a' is used twice" in found
    assert "t.toml: terminals[1].serial: 'S1' is used twice" in found
    assert "t.toml: receiver.auth_path: must differ from receiver.event_path" in found


def test_wrong_shapes() -> None:
    found = problems('site = 3\n[receiver]\nlisten = "127.0.0.1:1"\nread_timeout = true\n')
    assert any("site (line 1): must be a table" in p for p in found)
    assert any("receiver.listen (line 3): must be a list" in p for p in found)
    assert any(
        "receiver.read_timeout (line 4): must be a number, not a boolean" in p for p in found
    )


def test_integer_accepted_for_number() -> None:
    assert config.parse("[receiver]\nread_timeout = 5\n").receiver.read_timeout == 5.0


def test_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGED_CONFIG", str(tmp_path / "env.toml"))
    assert config.resolve_path(None) == str(tmp_path / "env.toml")
    assert config.resolve_path("explicit.toml") == "explicit.toml"
    monkeypatch.delenv("EDGED_CONFIG")
    assert config.resolve_path(None) == "/etc/edged/edged.toml"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[admin]\ntoken = "s3cret"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    assert cli.main(["check-config", "-c", str(good)]) == 0
    assert cli.main(["-c", str(bad), "check-config"]) == 78
    err = capsys.readouterr().err
    assert err.count("edged: ") == 9
    assert cli.main(["check-config", "-c", str(tmp_path / "missing.toml")]) == 78
    assert "no such file" in capsys.readouterr().err


def test_print_masks_secrets_and_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[admin]\ntoken = "s3cret"\n[tips]\ngranted = "Hi \\"there\\""\n'
        '[[terminals]]\nname = "t"\nserial = "S1"\n'
    )
    assert cli.main(["check-config", "--print", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and 'token = "********"' in out
    reparsed = config.parse(out.replace('"********"', '"x"'))
    assert reparsed.tips == {"granted": 'Hi "there"'}
    assert reparsed.terminals[0].serial == "S1"


def test_admin_token_file_wins(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    cfg = config.parse(f'[admin]\ntoken = "inline"\ntoken_file = "{token}"\n')
    assert config.admin_token(cfg) == "from-file"
    cfg = config.parse(f'[admin]\ntoken_file = "{tmp_path / "nope"}"\n')
    with pytest.raises(ConfigError, match=r"admin\.token_file: cannot read"):
        config.admin_token(cfg)


# ----- doors -----
def door_problems(make_config: Callable[..., Config], extra: str) -> list[str]:
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


def test_the_gpiod_factory_names_its_chip(make_config: Callable[..., Config]) -> None:
    assert make_config("").gpio.chip == "/dev/gpiochip0"
    cfg = make_config('[gpio]\npin_factory = "gpiod"\nchip = "/dev/gpiochip4"\n')
    assert (cfg.gpio.pin_factory, cfg.gpio.chip) == ("gpiod", "/dev/gpiochip4")
    found = door_problems(make_config, '[gpio]\npin_factory = "gpiod"\nchip = "gpiochip4"\n')
    [problem] = found
    assert "gpio.chip (line" in problem
    assert problem.endswith(": 'gpiochip4' is not a GPIO chip's path (/dev/gpiochipN)")


def test_every_door_problem_is_reported(make_config: Callable[..., Config]) -> None:
    found = door_problems(
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
    fixed = door_problems(
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
    found = door_problems(
        make_config, terminal + '\n[[doors]]\nname = "lobby"\nlock = { pin = 5 }\n'
    )
    assert found == ["test.toml: terminals[2].door: 'side' is not a configured door (lobby)"]


def test_unknown_door_key_suggests(make_config: Callable[..., Config]) -> None:
    found = door_problems(
        make_config, '\n[[doors]]\nname = "a"\nlock = { pin = 5 }\nunlock_tme = 3\n'
    )
    assert "did you mean 'unlock_time'?" in found[0]


def test_mqtt_is_off_when_absent_and_defaults_follow_the_site() -> None:
    cfg = config.parse("", "empty.toml")
    assert cfg.mqtt.enabled is False
    cfg = config.parse('[site]\nname = "Main Hall"\n[mqtt]\nhost = "b"\n', "t.toml")
    assert cfg.mqtt.enabled and cfg.mqtt.broker_port == 1883 and cfg.mqtt.qos == 1
    cfg = config.parse('[mqtt]\nhost = "b"\ntls = true\n', "t.toml")
    assert cfg.mqtt.broker_port == 8883


def test_every_mqtt_problem_is_reported_with_its_key() -> None:
    found = problems('[mqtt]\nhost = "b"\nqos = 0\ntopic_prefix = "a/#"\n')
    assert [p.split(":")[1] for p in found] == [" mqtt.qos (line 3)", " mqtt.topic_prefix (line 4)"]
    found = problems(
        '[mqtt]\nhost = "b"\nport = 70000\npassword = "p"\n'
        'password_file = "f"\nca_file = "ca.pem"\nkey_file = "k"\ncommands = true\n'
        "homeassistant_commands = true\n"
    )
    text = "\n".join(found)
    for key in (
        "mqtt.port: must be a port number",
        "mqtt.password: set password or password_file",
        "mqtt.username: is required",
        "mqtt.tls: must be true",
        "mqtt.key_file: needs mqtt.cert_file",
        "mqtt.command_secret_file: is required",
        "mqtt.homeassistant_commands: needs mqtt.homeassistant",
    ):
        assert key in text, (key, found)


def test_mqtt_secrets_are_read_from_their_files(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "short").write_text("tiny")
    base = f'[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "{tmp_path / "pw"}"\n'
    assert config.mqtt_password(config.parse(base, "t.toml")) == "s3cret"
    short = config.parse(
        base + f'commands = true\ncommand_secret_file = "{tmp_path / "short"}"\n', "t.toml"
    )
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        config.mqtt_command_secret(short)
    missing = config.parse(base + 'commands = true\ncommand_secret_file = "/nonexistent"\n', "t")
    with pytest.raises(ConfigError, match=r"mqtt\.command_secret_file: cannot read"):
        config.mqtt_command_secret(missing)
