"""Configuration: TOML in, typed frozen dataclasses out, every error reported at once.

Each section is a dataclass (``schema``); the builder walks the type hints, so adding a key is
adding a field (and documenting it in ``docs/config.md``: a test fails otherwise). A field's
metadata may carry ``check`` (a function returning an error text or None, see ``fields``) and
``secret`` (masked by ``edged check-config --print``, see ``render``). Checks across fields are in
``checks``, reading secrets from their files in ``secrets``.

The package depends on the root modules only (``model``, ``errors``): every room may import it.
"""

from __future__ import annotations

from edged.config.builder import DEFAULT_PATH, load, parse, resolve_path
from edged.config.checks import CROSS_CHECKS
from edged.config.fields import Check
from edged.config.render import _toml_value as _toml_value  # tests write config text with it
from edged.config.render import to_dict, to_toml
from edged.config.schema import (
    ALARM_ACTIONS,
    ALARM_CODES,
    DEFAULT_ALARM_ACTIONS,
    MAX_PIN,
    PRIVATE_NETWORKS,
    AdminConfig,
    Config,
    DoorConfig,
    FireConfig,
    GatewayConfig,
    GpioConfig,
    InputConfig,
    LockConfig,
    LoggingConfig,
    MqttConfig,
    PinFactory,
    ReceiverConfig,
    ReconcilerConfig,
    SirenConfig,
    SiteConfig,
    StorageConfig,
    TerminalConfig,
    TipsTable,
    UpstreamConfig,
)
from edged.config.secrets import admin_token, mqtt_command_secret, mqtt_password, upstream_token

__all__ = [
    "ALARM_ACTIONS",
    "ALARM_CODES",
    "CROSS_CHECKS",
    "DEFAULT_ALARM_ACTIONS",
    "DEFAULT_PATH",
    "MAX_PIN",
    "PRIVATE_NETWORKS",
    "AdminConfig",
    "Check",
    "Config",
    "DoorConfig",
    "FireConfig",
    "GatewayConfig",
    "GpioConfig",
    "InputConfig",
    "LockConfig",
    "LoggingConfig",
    "MqttConfig",
    "PinFactory",
    "ReceiverConfig",
    "ReconcilerConfig",
    "SirenConfig",
    "SiteConfig",
    "StorageConfig",
    "TerminalConfig",
    "TipsTable",
    "UpstreamConfig",
    "admin_token",
    "load",
    "mqtt_command_secret",
    "mqtt_password",
    "parse",
    "resolve_path",
    "to_dict",
    "to_toml",
    "upstream_token",
]
