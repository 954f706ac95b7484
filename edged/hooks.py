"""What a feature hands the daemon to plug in: services, readiness checks, record listeners.

A feature (upstream, doors, managed terminals) is built with what it needs and returns its
:class:`Hooks`; edged/ops/wiring.py, the one place the daemon is assembled, passes each kind to
the part that runs it. No feature reaches into the daemon, the receiver or the admin API.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from edged.model import Event

# Runs while the daemon serves; cancelled at stop (it cleans up in its ``finally``).
Service = Callable[[], Coroutine[Any, Any, None]]
# One entry of /readyz: its name, whether it is ready, and what to show.
Check = Callable[[], tuple[str, bool, dict[str, Any]]]
# Called after each stored record: (event, the record, what the store made of it). The record
# and its storing are edged.store.events.Record and Stored; the root cannot name the store.
Listener = Callable[[Event, Any, Any], None]


@dataclass(frozen=True)
class Hooks:
    """One feature's services, readiness checks and record listeners."""

    services: tuple[Service, ...] = ()
    checks: tuple[Check, ...] = ()
    listeners: tuple[Listener, ...] = ()

    @staticmethod
    def merge(features: Iterable[Hooks]) -> Hooks:
        """Every feature's hooks together, in the order the features were given."""
        features = list(features)
        return Hooks(
            tuple(s for f in features for s in f.services),
            tuple(c for f in features for c in f.checks),
            tuple(li for f in features for li in f.listeners),
        )
