"""Secrets the configuration names: read from their files, which win over inline values."""

from __future__ import annotations

from pathlib import Path

from edged.config.schema import Config
from edged.errors import ConfigError


def admin_token(cfg: Config) -> str:
    """The admin write token: ``admin.token_file`` wins over inline ``admin.token``."""
    if cfg.admin.token_file:
        try:
            return Path(cfg.admin.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"admin.token_file: cannot read: {exc}") from None
    return cfg.admin.token


def upstream_token(cfg: Config) -> str:
    """The upstream bearer token: ``upstream.token_file`` wins over inline ``upstream.token``."""
    if cfg.upstream.token_file:
        try:
            return Path(cfg.upstream.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"upstream.token_file: cannot read: {exc}") from None
    return cfg.upstream.token


def mqtt_password(cfg: Config) -> str:
    """The broker password: ``mqtt.password_file`` wins over inline ``mqtt.password``."""
    if cfg.mqtt.password_file:
        try:
            return Path(cfg.mqtt.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"mqtt.password_file: cannot read: {exc}") from None
    return cfg.mqtt.password


def mqtt_command_secret(cfg: Config) -> bytes:
    """The per-gateway command secret (``mqtt.command_secret_file``), at least 16 bytes."""
    try:
        secret = Path(cfg.mqtt.command_secret_file).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"mqtt.command_secret_file: cannot read: {exc}") from None
    if len(secret) < 16:
        raise ConfigError("mqtt.command_secret_file: the secret must be at least 16 bytes")
    return secret
