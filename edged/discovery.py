"""Find terminals by mDNS: ``_http._tcp.local.``, instance ``sensetime``, TXT ``sn``/``model``.

python-zeroconf is optional (``edged[discovery]``; Debian: python3-zeroconf) and imported only
here. Several terminals may announce the same instance name: they are told apart by TXT ``sn``.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from edged.errors import DiscoveryError

SERVICE = "_http._tcp.local."
INSTANCE = "sensetime"


@dataclass(frozen=True)
class Found:
    """One terminal that announced itself."""

    serial: str
    model: str
    address: str


def txt_value(raw: bytes | None) -> str:
    """A TXT value as text, trailing terminator bytes (NUL) and blanks removed."""
    if not raw:
        return ""
    return raw.rstrip(b"\x00").decode("utf-8", "replace").strip().rstrip("\x00")


def from_properties(props: dict[bytes, bytes | None], addresses: list[str], port: int) -> Found:
    """A Found from a service's TXT properties and addresses (empty serial: not a terminal)."""
    address = f"{addresses[0]}:{port}" if addresses else "?"
    return Found(txt_value(props.get(b"sn")), txt_value(props.get(b"model")), address)


def _import() -> Any:
    try:
        import zeroconf
    except ImportError:
        raise DiscoveryError(
            "discovery needs python-zeroconf: apt install python3-zeroconf "
            "(or pip install 'edged[discovery]')"
        ) from None
    return zeroconf


def browse(timeout: float = 5.0) -> list[Found]:
    """Listen ``timeout`` seconds; every terminal seen, once per serial, sorted by serial."""
    zc_mod = _import()
    zc = zc_mod.Zeroconf()
    names: set[str] = set()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        names.add(name)

    try:
        zc_mod.ServiceBrowser(zc, SERVICE, handlers=[on_change])
        time.sleep(timeout)
        found: dict[str, Found] = {}
        for name in sorted(names):
            info = zc.get_service_info(SERVICE, name, timeout=1000)
            if info is None:
                continue
            addresses = [socket.inet_ntoa(a) for a in info.addresses if len(a) == 4]
            item = from_properties(info.properties or {}, addresses, info.port or 0)
            is_terminal = name.lower().startswith(INSTANCE) or item.serial
            if is_terminal and item.serial:
                found[item.serial] = item
        return [found[k] for k in sorted(found)]
    except OSError as exc:
        raise DiscoveryError(f"mDNS discovery failed: {exc}") from None
    finally:
        zc.close()
