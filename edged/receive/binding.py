"""Each terminal is bound to its own address: a request naming a terminal from elsewhere is forged.

The terminals send no credentials, and their serials are no secret (printed on the device and
announced by mDNS), so the source address is what ties a request to a terminal. A terminal's
address is, in this order: its ``address`` key (an address or a small network), its ``host``
(resolved when it is a name), or the address it was first seen from, pinned on first contact
like a certificate and re-pinned only by an operator (``edged terminals trust NAME --address``).
A request that names a bound terminal from another address is refused, kept in
``refused_requests`` (not among the records) and raises an alarm. docs/security.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edged import aio
from edged.config import Config, TerminalConfig
from edged.errors import StoreError
from edged.receive.normalize import sanitize
from edged.store.presence import (
    pin_first,
    pinned_address,
    pinned_serials,
    record_refused,
    refused_summary,
)

if TYPE_CHECKING:
    from edged.store.events import Store

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# How long a resolved host name is trusted; a mismatch re-resolves once it is this old.
RESOLVE_TTL = 60.0
RESOLVE_RECHECK = 5.0
RESOLVE_TIMEOUT = 1.0
# Refused requests: how long they keep the alarm up, how many a source may add a minute, and
# how many the table keeps (a flood of forgeries must not fill the disk: KEEP_REFUSED, in
# edged/store/presence.py).
ALARM_WINDOW = 24 * 3600.0
STORED_PER_SOURCE_MINUTE = 10

# ----- plain values ---------------------------------------------------------------------------


def parse_ip(text: str) -> Address | None:
    """The address of a peer (zone dropped, IPv4-mapped IPv6 as IPv4), or None if not one."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _network(address: Address) -> Network:
    return ipaddress.ip_network(address)


@dataclass(frozen=True)
class Binding:
    """Where one terminal may send from, and why (``address``, ``host``, ``pinned``, none)."""

    how: str  # "address" | "host" | "pinned" | "unpinned"
    networks: tuple[Network, ...] = ()
    detail: str = ""

    def allows(self, address: Address | None) -> bool:
        """Whether a request from ``address`` may speak for this terminal."""
        return address is not None and any(address in net for net in self.networks)

    def describe(self) -> str:
        """One phrase for logs and the CLI: ``host lobby.lan (10.0.0.5)``, ``pinned 10.0.0.7``."""
        if self.how == "unpinned":
            return "not pinned yet"
        if self.how == "host" and parse_ip(self.detail) is None:
            found = ", ".join(str(n.network_address) for n in self.networks)
            return f"host {self.detail} ({found or 'does not resolve'})"
        return f"{self.how} {self.detail}"


def binding_of(
    terminal: TerminalConfig, resolved: Iterable[Address], pinned: str | None
) -> Binding:
    """A terminal's binding from its config, its host's addresses and its pinned address."""
    if terminal.address:
        net = ipaddress.ip_network(terminal.address, strict=False)
        return Binding("address", (net,), terminal.address)
    if terminal.host:
        return Binding("host", tuple(_network(a) for a in resolved), terminal.host)
    pin = parse_ip(pinned) if pinned else None
    if pin is not None:
        return Binding("pinned", (_network(pin),), str(pin))
    return Binding("unpinned")


def refused_body(raw: bytes) -> str:
    """What is kept of a refused request's body: JSON with images and PINs dropped, bounded."""
    try:
        text = json.dumps(sanitize(json.loads(raw)), ensure_ascii=False)
    except (ValueError, RecursionError):
        text = raw[:4096].decode("utf-8", "replace")
    return text[:65536].encode("utf-8", "replace").decode("utf-8")


class Forged(Exception):
    """A request names a terminal but does not come from its address."""

    def __init__(self, terminal: TerminalConfig, source: str, binding: Binding) -> None:
        self.terminal = terminal
        self.source = source
        self.binding = binding
        super().__init__(
            f"source address {source} is not this terminal's: request refused and recorded"
        )


# ----- the database ---------------------------------------------------------------------------


# edged/store/presence.py reads and writes the pins and the refused requests.


# ----- host names -----------------------------------------------------------------------------


class Resolver:
    """A managed terminal's ``host`` as addresses: literal, or resolved and cached a while."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._cache: dict[str, tuple[float, tuple[Address, ...]]] = {}
        self._failing: set[str] = set()

    def cached(self, host: str) -> tuple[Address, ...]:
        """The addresses known for ``host`` now, without asking DNS."""
        literal = parse_ip(host)
        if literal is not None:
            return (literal,)
        return self._cache.get(host, (0.0, ()))[1]

    async def addresses(self, host: str, max_age: float = RESOLVE_TTL) -> tuple[Address, ...]:
        """The addresses of ``host``, resolved again when the cached answer is older."""
        if parse_ip(host) is not None:
            return self.cached(host)
        at, known = self._cache.get(host, (float("-inf"), ()))
        if self.clock() - at < max_age:
            return known
        try:
            found = await aio.within(_lookup(host), RESOLVE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            if host not in self._failing:
                self._failing.add(host)
                log.warning(
                    "terminal host %s does not resolve (%s): keeping %s",
                    host,
                    exc,
                    ", ".join(map(str, known)) or "no address",
                )
            self._cache[host] = (self.clock(), known)
            return known
        if host in self._failing:
            self._failing.discard(host)
            log.info("terminal host %s resolves again: %s", host, ", ".join(map(str, found)))
        self._cache[host] = (self.clock(), found)
        return found


async def _lookup(host: str) -> tuple[Address, ...]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return _addresses(infos)


def resolve_now(host: str) -> tuple[Address, ...]:
    """A host's addresses, blocking (for the CLI); none when it does not resolve."""
    literal = parse_ip(host)
    if literal is not None:
        return (literal,)
    try:
        return _addresses(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except OSError:
        return ()


def _addresses(infos: Iterable[tuple[Any, ...]]) -> tuple[Address, ...]:
    found = (parse_ip(str(info[4][0])) for info in infos)
    return tuple(dict.fromkeys(a for a in found if a is not None))


# ----- the daemon's side ----------------------------------------------------------------------


class Heard(Protocol):
    """What the receiver last heard from one terminal (receive/receiver.py, TerminalSeen)."""

    @property
    def serial(self) -> str:
        """The terminal's serial."""

    @property
    def address(self) -> str | None:
        """The address it was last heard from."""


class Binder:
    """Admits a request for a terminal only from that terminal's address; records forgeries."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        clock: Callable[[], float] = time.time,
        heard: Mapping[str, Heard] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.heard: Mapping[str, Heard] = {} if heard is None else heard  # by serial, live
        self.resolver = Resolver()
        # source -> (minute start, stored in it, logged?) for the per-source limits
        self._sources: dict[str, tuple[float, int]] = {}

    def reconfigure(self, cfg: Config) -> None:
        """Take a reloaded configuration (its terminals' ``host`` and ``address``)."""
        self.cfg = cfg

    async def binding(self, terminal: TerminalConfig, max_age: float = RESOLVE_TTL) -> Binding:
        """A terminal's binding now."""
        resolved: tuple[Address, ...] = ()
        if terminal.host and not terminal.address:
            resolved = await self.resolver.addresses(terminal.host, max_age)
        pinned = None
        if not terminal.host and not terminal.address:
            pinned = pinned_address(self.store.reader, terminal.serial)
        return binding_of(terminal, resolved, pinned)

    async def admit(self, serial: str, source: str, first_contact: bool = True) -> None:
        """Accept a request naming ``serial`` from ``source``, or raise Forged.

        An unpinned receive-only terminal is pinned to ``source`` here when ``first_contact``
        (a record or remote-auth request; a heartbeat never pins). Unknown serials are not
        bound (``receiver.accept_unknown_terminals`` decides about them).
        """
        terminal = self.cfg.terminal_by_serial(serial)
        if terminal is None:
            return
        address = parse_ip(source)
        bound = await self.binding(terminal)
        if bound.how == "unpinned" and address is not None:
            if first_contact:
                bound = await self._pin_first(terminal, address)
            else:
                return
        if not bound.allows(address) and bound.how == "host":
            bound = await self.binding(terminal, RESOLVE_RECHECK)  # the name may have moved
        if not bound.allows(address):
            raise Forged(terminal, source, bound)

    async def _pin_first(self, terminal: TerminalConfig, address: Address) -> Binding:
        serial, now = terminal.serial, self.clock()
        await self.store.run(lambda conn: pin_first(conn, serial, str(address), "first-seen", now))
        bound = await self.binding(terminal)  # a concurrent first contact may have won
        if bound.allows(address):
            log.info(
                "terminal %s: pinned to %s, the address it was first seen from",
                terminal.name,
                address,
            )
        return bound

    def known_source(self, serial: str | None, address: str) -> bool:
        """The request names a configured terminal (its ``sn`` header) or comes from one.

        From one: a configured ``host`` written as this address, or the address a configured
        terminal was last heard from. In memory only (no resolving, no database), unlike
        :meth:`identify`: it only widens the body limit; :meth:`admit` refuses forgeries.
        """
        serial = (serial or "").strip()
        if serial and self.cfg.terminal_by_serial(serial) is not None:
            return True
        if any(t.host == address for t in self.cfg.terminals if t.host):
            return True
        return any(
            entry.address == address and self.cfg.terminal_by_serial(entry.serial) is not None
            for entry in self.heard.values()
        )

    async def identify(self, source: str) -> str | None:
        """The one terminal bound to ``source`` (for a push or heartbeat naming none)."""
        address = parse_ip(source)
        if address is None:
            return None
        found: list[str] = []
        for terminal in self.cfg.terminals:
            configured = terminal.address or terminal.host
            if configured and (await self.binding(terminal)).allows(address):
                found.append(terminal.serial)
        pinned = pinned_serials(self.store.reader, str(address))
        found += [
            s for s in pinned if (t := self.cfg.terminal_by_serial(s)) and not (t.host or t.address)
        ]
        return found[0] if len(found) == 1 else None

    async def refuse(self, forged: Forged, path: str, raw: bytes) -> None:
        """Record a forged request (body without images) and log it once a source a minute."""
        now = self.clock()
        start, stored = self._sources.get(forged.source, (float("-inf"), 0))
        if now - start >= 60:
            start, stored = now, 0
            log.warning(
                "forged request to %s: claims terminal %s (%s) from %s, but it is bound to %s "
                "(logged once a minute per source)",
                path,
                forged.terminal.name,
                forged.terminal.serial,
                forged.source,
                forged.binding.describe(),
            )
        self._sources[forged.source] = (start, stored + 1)
        self._forget_quiet_sources(now)
        if stored >= STORED_PER_SOURCE_MINUTE:
            return
        row = (
            now,
            forged.source,
            forged.terminal.serial,
            forged.terminal.name,
            path,
            forged.binding.describe(),
            refused_body(raw),
        )
        try:
            await self.store.run(lambda conn: record_refused(conn, row))
        except (StoreError, sqlite3.Error) as exc:  # the refusal stands, recorded or not
            log.debug("forged request from %s not recorded: %s", forged.source, exc)

    def _forget_quiet_sources(self, now: float) -> None:
        if len(self._sources) > 1000:
            self._sources = {s: v for s, v in self._sources.items() if now - v[0] < 60}

    def alarm(self) -> dict[str, Any]:
        """The intrusion alarm for readiness: refused requests in the last 24 h."""
        summary = refused_summary(self.store.reader, self.clock() - ALARM_WINDOW)
        latest = summary["latest"]
        if latest:
            latest["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(latest["at"]))
        return {
            "ok": True,
            "alarm": summary["count"] > 0,
            "refused_24h": summary["count"],
            "latest": latest,
        }
