"""The internal event model every terminal payload is normalised into."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What a stored record is."""

    RECOGNITION = "recognition"  # push type 0
    ALARM = "alarm"  # push type 1
    AUTH = "auth"  # remote-authentication request: a person waits for the answer
    OTHER = "other"  # any other push type: stored and acknowledged
    MALFORMED = "malformed"  # a terminal's record that failed validation: stored, never acted on


class Replay(StrEnum):
    """Why a record is treated as replayed: stored, acknowledged, never acted upon."""

    STALE = "stale"  # terminal timestamp older than stale_after
    FUTURE = "future"  # terminal timestamp ahead of the gateway clock by more than stale_after
    NO_TIME = "no-timestamp"  # no usable timestamp: age unknown
    BACKFILL = "backfill"  # read back from a terminal's history


class Reason(StrEnum):
    """Why a decision came out as it did: a closed list (docs/decisions.md, decide.policy)."""

    GRANTED = "granted"
    FREE_ACCESS = "free_access"
    REPLAYED = "replayed"
    BLACKLISTED = "blacklisted"
    BLOCKED = "blocked"
    LOCKDOWN = "lockdown"
    NOT_LIVE = "not_live"
    STRANGER = "stranger"
    UNKNOWN_PERSON = "unknown_person"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    ENTRY_MODE_NOT_ALLOWED = "entry_mode_not_allowed"
    LOW_SCORE = "low_score"
    LOW_LIVENESS = "low_liveness"
    MASK_REQUIRED = "mask_required"
    NO_PERMISSION = "no_permission"
    HOLIDAY = "holiday"
    OUTSIDE_SCHEDULE = "outside_schedule"
    ANTI_PASSBACK = "anti_passback"


# recognitionType (firmware 1.2.1+)
RT_EMPLOYEE, RT_VISITOR, RT_STRANGER, RT_NOT_LIVE, RT_BLACKLIST = 1, 2, 3, 4, 5
# recognizeStatus (firmware 1.0/1.1 and remote-auth requests)
RS_UNKNOWN, RS_NOT_LIVE, RS_IN_LIBRARY, RS_STRANGER = 0, 1, 2, 3
RS_RECOGNIZED, RS_AUTH_PASSED, RS_AUTH_FAILED = 4, 5, 6
# user.type: 5 means blacklist since 1.3.0, 3 before it; both are read as blacklist.
USER_BLACKLIST_TYPES = frozenset({3, 5})


@dataclass(slots=True)
class User:
    """The person the terminal believes it saw, as the terminal describes them."""

    user_id: str | None = None
    name: str | None = None
    type: int | None = None
    ic_number: str | None = None
    job_number: str | None = None
    id_number: str | None = None
    guest_start: float | None = None  # epoch seconds
    guest_end: float | None = None
    groups: list[str] = field(default_factory=list)
    has_pin: bool = False


@dataclass(slots=True)
class Event:
    """One normalised terminal record (recognition, alarm, remote-auth request, other)."""

    kind: Kind
    serial: str
    dedup_key: str
    push_type: int | None = None
    uuid: str | None = None
    occurred_at: float | None = None  # epoch seconds, terminal clock
    firmware: str = "new"  # "new" (1.2.1+ schema) or "old" (1.0/1.1 schema)
    recognition_type: int | None = None
    recognize_status: int | None = None
    score: float | None = None
    liveness_score: float | None = None
    mask: int | None = None
    mode: int | None = None
    entry_mode: int | None = None
    abnormal_type: int | None = None
    terminal_pass: bool | None = None
    temperature: float | None = None
    qrcode: str | None = None
    user: User | None = None
    alarm_code: int | None = None
    alarm_status: int | None = None
    trace_id: str | None = None
    description: str | None = None
    image_b64: str | None = None  # snapshot or alarm photo, still base64
    raw: dict[str, Any] = field(default_factory=dict)  # payload, image removed, PIN redacted
    problem: str | None = None  # why a MALFORMED record failed validation

    @property
    def blacklisted(self) -> bool:
        """The terminal itself flags this person as blacklisted."""
        if self.recognition_type == RT_BLACKLIST:
            return True
        return self.user is not None and self.user.type in USER_BLACKLIST_TYPES

    @property
    def not_live(self) -> bool:
        """The terminal's liveness check failed."""
        if self.recognition_type == RT_NOT_LIVE:
            return True
        return self.firmware == "old" and self.recognize_status == RS_NOT_LIVE

    @property
    def stranger(self) -> bool:
        """The terminal found no matching face in its library."""
        if self.recognition_type == RT_STRANGER:
            return True
        return self.firmware == "old" and self.recognize_status == RS_STRANGER
