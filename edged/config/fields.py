"""Checks of single values: each takes a parsed value and returns an error text or None.

A field's metadata carries its check (``meta(check)``) and whether it is a secret, masked by
``edged check-config --print``. The terminals' certificate fingerprint is parsed here too, so
that both the configuration and ``edged.terminals.tlspin`` use one definition.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], str | None]


def meta(check: Check | None = None, secret: bool = False) -> dict[str, Any]:
    """A field's metadata: its value check and whether it is a secret."""
    return {"check": check, "secret": secret}


def listen_check(values: list[str]) -> str | None:
    """Listen addresses: each ``HOST:PORT``."""
    for value in values:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdecimal() or not 0 <= int(port) <= 65535 or not host:
            return f"{value!r} is not HOST:PORT (use [::1]:8090 for IPv6)"
    return None


def networks_check(values: list[str]) -> str | None:
    """Allowed networks: each an IP network such as ``192.168.1.0/24``."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not an IP network such as 192.168.1.0/24"
    return None


def address_check(value: str) -> str | None:
    """A terminal's ``address``: an address or a network of at most 256 addresses."""
    if not value:
        return None
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an IP address or network"
    if network.num_addresses > 256:
        return f"{value!r} is too large: at most 256 addresses (a /24)"
    return None


def path_check(value: str) -> str | None:
    """A URL path: starts with ``/``."""
    return None if value.startswith("/") else f"{value!r} must start with '/'"


def positive(value: float) -> str | None:
    """A number greater than 0."""
    return None if value > 0 else "must be greater than 0"


def not_negative(value: float) -> str | None:
    """A number of 0 or more."""
    return None if value >= 0 else "must be 0 or more"


def timezone_check(value: str) -> str | None:
    """An IANA time zone name."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"{value!r} is not an IANA time zone such as 'Europe/Berlin'"
    return None


def serial_check(value: str) -> str | None:
    """A terminal's serial: 1-64 letters, digits, ``-`` and ``_``."""
    return None if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value) else f"{value!r} is not a serial"


def name_check(value: str) -> str | None:
    """A terminal's or door's name: lower case, digits, ``-`` and ``_``."""
    if re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", value):
        return None
    return f"{value!r}: use lower-case letters, digits, '-' and '_'"


def base_url_check(value: str) -> str | None:
    """The gateway's public URL: empty, or http(s) with a host and an optional path."""
    if not value:
        return None
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        return f"{value!r} is not an http:// or https:// URL such as 'http://192.168.1.10:8090'"
    return None


def token_check(value: int) -> str | None:
    """A terminal token's lifetime: 1-1440 minutes."""
    return None if 1 <= value <= 1440 else "must be 1-1440 minutes"


def url_check(value: str) -> str | None:
    """An upstream URL: empty, or http(s)."""
    if not value or re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return None
    return f"{value!r} is not an http:// or https:// URL"


# ----- certificate fingerprints -----
FINGERPRINT_PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")


def normalise_fingerprint(text: str) -> str | None:
    """A fingerprint in canonical form (lower case, no colons), or None if it is not one."""
    value = text.strip().lower()
    if value.startswith(FINGERPRINT_PREFIX):
        value = value[len(FINGERPRINT_PREFIX) :]
    value = value.replace(":", "")
    return FINGERPRINT_PREFIX + value if _HEX.fullmatch(value) else None


def check_fingerprint(text: str) -> str | None:
    """Config check: empty or ``sha256:`` and 64 hex digits (colons allowed)."""
    if not text or normalise_fingerprint(text):
        return None
    return "must be 'sha256:' followed by 64 hex digits"
