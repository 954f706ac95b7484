"""Documentation keeps up with the code: every config key and CLI command is documented."""

from __future__ import annotations

import dataclasses

from edged import config
from edged.cli import main as cli
from tests.project.helpers import ROOT, cli_commands, config_keys


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


def test_every_cli_command_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    missing = [c for c in cli_commands(cli.parser()) if f"`{c}" not in text]
    assert not missing, f"undocumented commands in docs/cli.md: {missing}"
