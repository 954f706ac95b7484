"""Cross-field checks: each takes the built Config and returns the problems it finds."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from edged.config.fields import check_fingerprint
from edged.config.schema import Config, TerminalConfig
from edged.model import Reason


def _unique_terminals(cfg: Config) -> list[str]:
    problems: list[str] = []
    for attr in ("name", "serial"):
        seen: set[str] = set()
        for i, terminal in enumerate(cfg.terminals):
            value = getattr(terminal, attr)
            if not value:
                problems.append(f"terminals[{i}].{attr}: is required")
            elif value in seen:
                problems.append(f"terminals[{i}].{attr}: {value!r} is used twice")
            seen.add(value)
    return problems


def _distinct_paths(cfg: Config) -> list[str]:
    if cfg.receiver.event_path == cfg.receiver.auth_path:
        return ["receiver.auth_path: must differ from receiver.event_path"]
    return []


def _doors_valid(cfg: Config) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for i, door in enumerate(cfg.doors):
        if not door.name:
            problems.append(f"doors[{i}].name: is required")
        elif door.name in seen:
            problems.append(f"doors[{i}].name: {door.name!r} is used twice")
        seen.add(door.name)
        if door.lock.pin is None and not door.terminal_relay:
            problems.append(f"doors[{i}].lock.pin: is required (or a terminal_relay)")
        if door.terminal_relay:
            relay = next((t for t in cfg.terminals if t.name == door.terminal_relay), None)
            if relay is None or not relay.host:
                problems.append(
                    f"doors[{i}].terminal_relay: {door.terminal_relay!r} is not a managed "
                    "terminal (a [[terminals]] name with a host)"
                )
        if door.unlock_time > door.max_unlock_time:
            problems.append(f"doors[{i}].unlock_time: must not exceed max_unlock_time")
    return problems


def _terminal_doors_exist(cfg: Config) -> list[str]:
    if not cfg.doors:
        return []
    names = {d.name for d in cfg.doors}
    return [
        f"terminals[{i}].door: {t.door!r} is not a configured door ({', '.join(sorted(names))})"
        for i, t in enumerate(cfg.terminals)
        if t.door and t.door not in names
    ]


def _pins_used_once(cfg: Config) -> list[str]:
    owners: list[tuple[str, int | None]] = []
    for i, door in enumerate(cfg.doors):
        for part in ("lock", "contact", "rex"):
            owners.append((f"doors[{i}].{part}.pin", getattr(door, part).pin))
    owners += [("siren.pin", cfg.siren.pin), ("fire.pin", cfg.fire.pin)]
    problems: list[str] = []
    first: dict[int, str] = {}
    for path, pin in owners:
        if pin is None:
            continue
        if pin in first:
            problems.append(f"{path}: GPIO {pin} is already used by {first[pin]}")
        else:
            first[pin] = path
    return problems


def _managed_terminals(cfg: Config) -> list[str]:
    """Managed terminals need a gateway URL the terminal can use, within 1024 bytes."""
    problems: list[str] = []
    if any(t.host for t in cfg.terminals) and not cfg.gateway.public_url:
        problems.append("gateway.public_url: required when a terminal has a host (reconciler)")
    for path in (cfg.receiver.event_path, cfg.receiver.auth_path):
        if len(cfg.gateway.url(path).encode()) > 1024:
            problems.append("gateway.public_url: the terminals' URLs would pass 1024 bytes")
    for i, t in enumerate(cfg.terminals):
        problems.extend(f"terminals[{i}].{p}" for p in _terminal_problems(t))
    return problems


def _terminal_problems(t: TerminalConfig) -> list[str]:
    problems = []
    if not 1 <= t.port <= 65535:
        problems.append("port: must be a port number 1-65535")
    if t.password and t.password_file:
        problems.append("password: set password or password_file, not both")
    fingerprint = check_fingerprint(t.tls_fingerprint)
    if fingerprint:
        problems.append(f"tls_fingerprint: {fingerprint}")
    if not 0 <= t.remote_auth_fallback_minutes <= 60:
        problems.append("remote_auth_fallback_minutes: must be 0-60 (0: never)")
    return problems


def _tips_problems(cfg: Config) -> list[str]:
    """``[tips]`` keys are decision reasons; ``[tips.<lang>]`` tables hold reasons too."""
    reasons = [r.value for r in Reason]
    problems: list[str] = []

    def check(path: str, key: str) -> None:
        if key not in reasons:
            close = difflib.get_close_matches(key, reasons, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{path}.{key}: not a decision reason (docs/decisions.md){hint}")

    for key, value in cfg.tips.items():
        if isinstance(value, dict):
            if not re.fullmatch(r"[a-z]{2,3}([-_][A-Za-z0-9]{2,8})?", key):
                problems.append(f"tips.{key}: not a language code such as 'de' or 'pt-BR'")
            for reason in value:
                check(f"tips.{key}", reason)
        else:
            check("tips", key)
    return problems


def _upstream_doors(cfg: Config) -> list[str]:
    doors = {t.door for t in cfg.terminals if t.door}
    return [
        f"upstream.online_only_doors[{i}]: {name!r} is not the door of any terminal"
        for i, name in enumerate(cfg.upstream.online_only_doors)
        if name not in doors
    ]


def _upstream_cache_age(cfg: Config) -> list[str]:
    if cfg.upstream.max_cache_age and not cfg.upstream.people_url:
        return ["upstream.max_cache_age: needs upstream.people_url (the cache's only source)"]
    return []


def _terminal_clock(cfg: Config) -> list[str]:
    """``ntp`` needs a server; a server is only used by ``ntp``; one fallback setting a terminal."""
    clock = cfg.terminal_clock
    problems: list[str] = []
    if clock.mode == "ntp" and not clock.ntp_server.strip():
        problems.append("terminal_clock.ntp_server: required when mode is 'ntp'")
    if clock.ntp_server and clock.mode != "ntp":
        problems.append("terminal_clock.ntp_server: only used when mode is 'ntp'")
    if any(ch.isspace() for ch in clock.ntp_server.strip()):
        problems.append("terminal_clock.ntp_server: must be a host name or address")
    limit = clock.max_drift or cfg.receiver.stale_after / 2
    if clock.mode == "manual" and clock.set_above >= limit:
        problems.append(
            f"terminal_clock.set_above: must be below the drift alarm ({limit:g} s: max_drift, "
            "or half of receiver.stale_after), or a drifting clock is alarmed and never set"
        )
    for i, t in enumerate(cfg.terminals):
        if t.remote_auth_fallback_minutes and t.settings.remote_auth_fallback_minutes is not None:
            problems.append(
                f"terminals[{i}].settings.remote_auth_fallback_minutes: also set as "
                f"terminals[{i}].remote_auth_fallback_minutes; set one"
            )
    return problems


def _mqtt_valid(cfg: Config) -> list[str]:
    m = cfg.mqtt
    if not m.enabled:
        return []
    problems = []
    if not 0 <= m.port <= 65535:
        problems.append("mqtt.port: must be a port number 1-65535 (0: 1883, or 8883 with tls)")
    if m.password and m.password_file:
        problems.append("mqtt.password: set password or password_file, not both")
    if (m.password or m.password_file) and not m.username:
        problems.append("mqtt.username: is required with a password")
    if (m.ca_file or m.cert_file) and not m.tls:
        problems.append("mqtt.tls: must be true when ca_file or cert_file is set")
    if m.key_file and not m.cert_file:
        problems.append("mqtt.key_file: needs mqtt.cert_file")
    if m.commands and not m.command_secret_file:
        problems.append("mqtt.command_secret_file: is required with mqtt.commands")
    if m.homeassistant_commands and not m.homeassistant:
        problems.append("mqtt.homeassistant_commands: needs mqtt.homeassistant")
    return problems


CROSS_CHECKS: list[Callable[[Config], list[str]]] = [
    _unique_terminals,
    _distinct_paths,
    _doors_valid,
    _terminal_doors_exist,
    _pins_used_once,
    _tips_problems,
    _upstream_doors,
    _upstream_cache_age,
    _managed_terminals,
    _terminal_clock,
    _mqtt_valid,
]
