"""Pass or deny: pure decision logic, plain values in, plain values out, no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edged.model import Event, Replay


class Reason(StrEnum):
    """Why a decision came out as it did (documented in docs/decisions.md)."""

    GRANTED = "granted"
    REPLAYED = "replayed"
    BLACKLISTED = "blacklisted"
    NOT_LIVE = "not_live"
    STRANGER = "stranger"
    UNKNOWN_PERSON = "unknown_person"
    BLOCKED = "blocked"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"


# verify_code the terminal understands: 1 not activated, 2 success, 3 no permission,
# 4 match failed, 5 outside allowed time.
VERIFY_CODES: dict[Reason, int] = {
    Reason.GRANTED: 2,
    Reason.REPLAYED: 3,
    Reason.BLACKLISTED: 3,
    Reason.NOT_LIVE: 4,
    Reason.STRANGER: 4,
    Reason.UNKNOWN_PERSON: 4,
    Reason.BLOCKED: 3,
    Reason.NOT_YET_VALID: 5,
    Reason.EXPIRED: 5,
}

DEFAULT_TIPS: dict[str, str] = {
    Reason.GRANTED: "Welcome",
    Reason.REPLAYED: "Try again",
    Reason.BLACKLISTED: "Access denied",
    Reason.NOT_LIVE: "Try again",
    Reason.STRANGER: "Unknown face",
    Reason.UNKNOWN_PERSON: "Not registered",
    Reason.BLOCKED: "Access denied",
    Reason.NOT_YET_VALID: "Not yet valid",
    Reason.EXPIRED: "Expired",
}


@dataclass(frozen=True, slots=True)
class Person:
    """A person from the local cache, as the decision needs them."""

    id: str
    name: str
    blocked: bool = False
    valid_from: float | None = None  # epoch seconds
    valid_until: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one remote-authentication request."""

    granted: bool
    reason: Reason
    rule: str
    person: Person | None = None

    @property
    def verify_code(self) -> int:
        """The terminal's verify_code for this outcome."""
        return VERIFY_CODES[self.reason]


def _deny(reason: Reason, rule: str, person: Person | None = None) -> Decision:
    return Decision(False, reason, rule, person)


def decide(event: Event, person: Person | None, now: float, replay: Replay | None) -> Decision:
    """The first rule: a live, known, unblocked person within validity passes."""
    if replay is not None:
        return _deny(Reason.REPLAYED, f"replay:{replay.value}", person)
    if event.blacklisted:
        return _deny(Reason.BLACKLISTED, "terminal:blacklist", person)
    if event.not_live:
        return _deny(Reason.NOT_LIVE, "terminal:liveness", person)
    if person is None:
        if event.stranger:
            return _deny(Reason.STRANGER, "terminal:stranger")
        return _deny(Reason.UNKNOWN_PERSON, "cache:no-match")
    if person.blocked:
        return _deny(Reason.BLOCKED, f"person:{person.id}:blocked", person)
    if person.valid_from is not None and now < person.valid_from:
        return _deny(Reason.NOT_YET_VALID, f"person:{person.id}:valid_from", person)
    if person.valid_until is not None and now >= person.valid_until:
        return _deny(Reason.EXPIRED, f"person:{person.id}:valid_until", person)
    return Decision(True, Reason.GRANTED, f"person:{person.id}", person)


def tip(reason: Reason, tips: dict[str, str]) -> str:
    """The short text for the terminal's screen, configured or default, at most 64 bytes."""
    text = tips.get(reason.value) or DEFAULT_TIPS[reason]
    encoded = text.encode("utf-8")[:64]
    return encoded.decode("utf-8", errors="ignore")


def replay_of(event: Event, now: float, stale_after: float) -> Replay | None:
    """Whether a record is too old, too far ahead, or undated to be acted upon."""
    if event.occurred_at is None:
        return Replay.NO_TIME
    age = now - event.occurred_at
    if age > stale_after:
        return Replay.STALE
    if age < -stale_after:
        return Replay.FUTURE
    return None
