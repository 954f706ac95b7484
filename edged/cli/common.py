"""What the command groups share: the configuration, the database, values as operators read them."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from edged import config


def load(args: argparse.Namespace) -> config.Config:
    """The configuration ``-c`` names (else ``$EDGED_CONFIG``, else the default), validated."""
    return config.load(getattr(args, "config", None))


def database(args: argparse.Namespace) -> tuple[config.Config, Any]:
    """The configuration and an open (migrated) connection to the state database."""
    from edged.store import events as store

    cfg = load(args)
    return cfg, store.open_connection(cfg.storage.database_path)


def faces(cfg: config.Config) -> Any:
    """The gateway's face files (``state_dir/faces``)."""
    from edged.access.faces import FaceStore

    return FaceStore(cfg.storage.faces_path)


def text(value: Any, none: str = "-") -> str:
    """A value as an operator reads it: no ``None``, ``True`` or list reprs."""
    if value is None or value == "" or value == [] or value == {}:
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | dict):
        return ", ".join(text(v) for v in value)
    return str(value)


def utc(ts: float | None) -> str:
    """Epoch seconds as ``2026-11-28 08:02:11 UTC`` (``-`` for none)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def count(text: str) -> int:
    """A count option: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value
