"""Documentation keeps up with the code: every config key and CLI command is documented."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from edged import config
from edged.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every documented key path: ``section.key``, ``list[].key`` for arrays of tables."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("internal"):
            continue
        path = f"{prefix}{field.name}"
        hint = hints[field.name]
        args = typing.get_args(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            keys.extend(config_keys(hint, f"{path}."))
        elif typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]):
            keys.extend(config_keys(args[0], f"{path}[]."))
        else:
            keys.append(path)
    return keys


def test_every_config_key_is_documented() -> None:
    text = (ROOT / "docs" / "config.md").read_text()
    missing = [k for k in config_keys(config.Config) if f"`{k}`" not in text]
    assert not missing, f"undocumented config keys in docs/config.md: {missing}"


def test_example_config_is_valid_and_mentions_every_section() -> None:
    path = ROOT / "etc" / "edged.toml"
    cfg = config.load(str(path))
    text = path.read_text()
    for field in dataclasses.fields(cfg):
        if not field.metadata.get("internal"):
            assert field.name in text, f"etc/edged.toml does not mention [{field.name}]"


def test_dev_config_is_valid() -> None:
    cfg = config.load(str(ROOT / "etc" / "dev.toml"))
    assert all(a.startswith("127.0.0.1:") for a in cfg.receiver.listen + cfg.admin.listen)


def cli_commands(parser: argparse.ArgumentParser, prefix: str = "edged") -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"{prefix} {name}")
                out.extend(cli_commands(sub, f"{prefix} {name}"))
    return out


def test_every_cli_command_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    missing = [c for c in cli_commands(cli.parser()) if f"`{c}" not in text]
    assert not missing, f"undocumented commands in docs/cli.md: {missing}"
