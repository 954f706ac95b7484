"""Find terminals by mDNS: ``_http._tcp.local.``, instance ``sensetime``, TXT ``sn``/``model``.

python-zeroconf is optional (``edged[discovery]``; Debian: python3-zeroconf) and imported only
here, to parse answers. Several terminals may announce the same instance name (and host name):
their records merge in any mDNS cache, so each answer is read on its own and its records are
kept apart by the sender's address, then told apart by TXT ``sn``. IPv4 only.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from edged.errors import DiscoveryError

SERVICE = "_http._tcp.local."
INSTANCE = "sensetime"
GROUP = "224.0.0.251"
PORT = 5353
_PTR, _ANY, _IN = 12, 255, 1


@dataclass(frozen=True)
class Found:
    """One terminal that announced itself."""

    serial: str
    model: str
    address: str


@dataclass
class _Instance:
    """What one sender said about one service instance."""

    props: dict[bytes, bytes | None] = field(default_factory=dict)
    port: int = 0
    host: str = ""


def txt_value(raw: bytes | None) -> str:
    """A TXT value as text, trailing terminator bytes (NUL) and blanks removed."""
    if not raw:
        return ""
    return raw.rstrip(b"\x00").decode("utf-8", "replace").strip().rstrip("\x00")


def txt_properties(rdata: bytes) -> dict[bytes, bytes | None]:
    """TXT record data (length-prefixed strings) as ``key: value`` (None: key without ``=``)."""
    props: dict[bytes, bytes | None] = {}
    i = 0
    while i < len(rdata):
        item = rdata[i + 1 : i + 1 + rdata[i]]
        i += 1 + rdata[i]
        key, eq, value = item.partition(b"=")
        if key and key.lower() not in props:
            props[key.lower()] = value if eq else None
    return props


def from_properties(props: dict[bytes, bytes | None], addresses: list[str], port: int) -> Found:
    """A Found from a service's TXT properties and addresses (empty serial: not a terminal)."""
    address = (f"{addresses[0]}:{port}" if port else addresses[0]) if addresses else "?"
    return Found(txt_value(props.get(b"sn")), txt_value(props.get(b"model")), address)


def query() -> bytes:
    """An mDNS query (multicast answers) for the service's instances and for ``sensetime``."""
    questions = [(SERVICE, _PTR), (f"{INSTANCE}.{SERVICE}", _ANY)]
    packet = struct.pack("!6H", 0, 0, len(questions), 0, 0, 0)
    for name, qtype in questions:
        labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
        packet += labels + b"\x00" + struct.pack("!2H", qtype, _IN)
    return packet


class Answers:
    """The records heard, kept apart by sender; ``found()`` lists the terminals among them."""

    def __init__(self, zeroconf: Any) -> None:
        self._zc = zeroconf
        self._instances: dict[tuple[str, str], _Instance] = {}
        self._hosts: dict[tuple[str, str], list[str]] = {}

    def add(self, data: bytes, sender: str) -> None:
        """Take in one received packet; queries and undecodable packets are ignored."""
        try:
            msg = self._zc.DNSIncoming(data)
        except Exception:
            return
        if msg.is_query() or not getattr(msg, "valid", True):
            return
        records = msg.answers() if callable(msg.answers) else msg.answers
        for record in records:
            self._record(record, sender)

    def _record(self, record: Any, sender: str) -> None:
        name = record.name.lower()
        if isinstance(record, self._zc.DNSAddress) and len(record.address) == 4:
            addrs = self._hosts.setdefault((sender, name), [])
            addrs.append(socket.inet_ntoa(record.address))
        elif not name.endswith("." + SERVICE):
            return
        elif isinstance(record, self._zc.DNSText):
            self._instance(sender, name).props = txt_properties(record.text)
        elif isinstance(record, self._zc.DNSService):
            inst = self._instance(sender, name)
            inst.port, inst.host = record.port, record.server.lower()

    def _instance(self, sender: str, name: str) -> _Instance:
        return self._instances.setdefault((sender, name), _Instance())

    def found(self) -> list[Found]:
        """Every terminal heard (a TXT ``sn``), once per serial, sorted by serial."""
        out: dict[str, Found] = {}
        for (sender, _name), inst in sorted(self._instances.items()):
            addresses = self._hosts.get((sender, inst.host)) or [sender]
            item = from_properties(inst.props, addresses, inst.port)
            if item.serial:
                out.setdefault(item.serial, item)
        return [out[k] for k in sorted(out)]


def _mreqn(ifindex: int) -> bytes:
    return struct.pack("=4s4si", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0"), ifindex)


def open_socket() -> tuple[socket.socket, list[int]]:
    """A socket on the mDNS port joined to the group on every interface that allows it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.bind(("", PORT))
        joined = []
        for ifindex, _name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(ifindex))
                joined.append(ifindex)
    except OSError:
        sock.close()
        raise
    if not joined:
        sock.close()
        raise DiscoveryError("mDNS discovery failed: no network interface takes multicast")
    return sock, joined


def _send(sock: socket.socket, interfaces: list[int], packet: bytes) -> None:
    for ifindex in interfaces:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn(ifindex))
            sock.sendto(packet, (GROUP, PORT))


def _import() -> Any:
    try:
        import zeroconf
    except ImportError:
        raise DiscoveryError(
            "discovery needs python-zeroconf: apt install python3-zeroconf "
            "(or pip install 'edged[discovery]')"
        ) from None
    return zeroconf


def _listen(sock: socket.socket, interfaces: list[int], answers: Answers, timeout: float) -> None:
    now = time.monotonic()
    deadline, next_query, gap = now + timeout, now, 1.0
    while now < deadline:
        if now >= next_query:
            _send(sock, interfaces, query())
            next_query, gap = now + gap, gap * 2
        ready, _, _ = select.select([sock], [], [], min(deadline, next_query) - now)
        if ready:
            data, (sender, _port) = sock.recvfrom(9000)
            answers.add(data, sender)
        now = time.monotonic()


def browse(timeout: float = 5.0) -> list[Found]:
    """Ask and listen ``timeout`` seconds; every terminal heard, once per serial, by serial."""
    answers = Answers(_import())
    try:
        sock, interfaces = open_socket()
        with sock:
            _listen(sock, interfaces, answers, timeout)
    except OSError as exc:
        raise DiscoveryError(f"mDNS discovery failed: {exc}") from None
    return answers.found()
