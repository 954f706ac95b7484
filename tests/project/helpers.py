"""Helpers the project's tests share: the repository's root, and walks of the config schema and
the command's parser that the documentation is compared with."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

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


def cli_commands(parser: argparse.ArgumentParser, prefix: str = "edged") -> list[str]:
    """Every command and subcommand: ``edged events``, ``edged people import``, …"""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"{prefix} {name}")
                out.extend(cli_commands(sub, f"{prefix} {name}"))
    return out
