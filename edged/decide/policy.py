"""Pass or deny: pure decision logic, plain values in, plain values out, no I/O, no clock.

``decide`` walks a fixed order of checks (documented in docs/decisions.md) over a ``View``: the
plain-data snapshot of what one decision needs, read by ``edged.access.lookup``. Every check it
makes is written down as a step, so a stored decision can be explained later (``edged why``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from edged.decide import schedule
from edged.decide.schedule import Holiday, Schedule
from edged.model import Event, Reason, Replay  # Reason: a root word, config checks tips by it

# verify_code the terminal understands: 1 not activated, 2 success, 3 no permission,
# 4 match failed, 5 outside allowed time.
VERIFY_CODES: dict[Reason, int] = {
    Reason.GRANTED: 2,
    Reason.FREE_ACCESS: 2,
    Reason.REPLAYED: 3,
    Reason.BLACKLISTED: 3,
    Reason.BLOCKED: 3,
    Reason.LOCKDOWN: 3,
    Reason.NOT_LIVE: 4,
    Reason.STRANGER: 4,
    Reason.UNKNOWN_PERSON: 4,
    Reason.NOT_YET_VALID: 5,
    Reason.EXPIRED: 5,
    Reason.ENTRY_MODE_NOT_ALLOWED: 3,
    Reason.LOW_SCORE: 4,
    Reason.LOW_LIVENESS: 4,
    Reason.MASK_REQUIRED: 3,
    Reason.NO_PERMISSION: 3,
    Reason.HOLIDAY: 5,
    Reason.OUTSIDE_SCHEDULE: 5,
    Reason.ANTI_PASSBACK: 3,
}

DEFAULT_TIPS: dict[str, str] = {
    Reason.GRANTED: "Welcome",
    Reason.FREE_ACCESS: "Welcome",
    Reason.REPLAYED: "Try again",
    Reason.BLACKLISTED: "Access denied",
    Reason.BLOCKED: "Access denied",
    Reason.LOCKDOWN: "Lockdown",
    Reason.NOT_LIVE: "Try again",
    Reason.STRANGER: "Unknown face",
    Reason.UNKNOWN_PERSON: "Not registered",
    Reason.NOT_YET_VALID: "Not yet valid",
    Reason.EXPIRED: "Expired",
    Reason.ENTRY_MODE_NOT_ALLOWED: "Use face",
    Reason.LOW_SCORE: "Try again",
    Reason.LOW_LIVENESS: "Try again",
    Reason.MASK_REQUIRED: "Wear a mask",
    Reason.NO_PERMISSION: "No access",
    Reason.HOLIDAY: "Closed today",
    Reason.OUTSIDE_SCHEDULE: "Not now",
    Reason.ANTI_PASSBACK: "Already in",
}

# entry_mode values that involve the face: score, liveness and mask checks apply to these
FACE_MODES = frozenset({1, 4, 6, 8, 10})
UNKNOWN_HANDLING = ("deny", "terminal")
MASK_WORN = 2
SITE = "*"  # the scope name of site-wide modes


@dataclass(frozen=True, slots=True)
class Person:
    """A person from the local cache, as the decision needs them."""

    id: str
    name: str
    blocked: bool = False
    valid_from: float | None = None  # epoch seconds
    valid_until: float | None = None
    type: str = "employee"


@dataclass(frozen=True, slots=True)
class Permission:
    """Members of ``group`` may use ``door`` while ``schedule`` is open (None: always)."""

    group: str
    door: str
    schedule: str | None = None

    @property
    def rule(self) -> str:
        """The stable name of this permission in decisions: ``permission:staff@lobby/office``."""
        return f"permission:{self.group}@{self.door}/{self.schedule or 'always'}"


@dataclass(frozen=True, slots=True)
class DoorSettings:
    """The per-door policy (defaults apply to a door with no settings row)."""

    name: str
    min_score: float | None = None
    min_liveness: float | None = None
    mask_required: bool = False
    entry_modes: frozenset[int] | None = None  # None: every mode
    anti_passback: int = 0  # seconds; 0: off
    unknown: str = "deny"  # "deny" or "terminal"
    lockdown_applies: bool = True  # site-wide lockdown applies to this door
    free_access_applies: bool = True  # site-wide free access applies to this door
    language: str | None = None  # customtips language; None: the site's


@dataclass(frozen=True, slots=True)
class Mode:
    """Lockdown and free access for one scope: the site (``*``) or a door."""

    scope: str
    lockdown: bool = False
    override_group: str | None = None
    free_access: bool = False
    free_schedule: str | None = None  # None: free access at all times while on


@dataclass(frozen=True, slots=True)
class View:
    """Everything one decision reads, as plain data (loaded by ``edged.access.lookup``)."""

    tz: tzinfo = UTC
    person: Person | None = None
    groups: frozenset[str] = frozenset()
    permissions: tuple[Permission, ...] = ()  # this door's, for the person's groups
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    holidays: tuple[Holiday, ...] = ()
    site_mode: Mode | None = None
    door_mode: Mode | None = None
    last_pass: float | None = None  # this person's last granted pass at this door


@dataclass(frozen=True)
class Tips:
    """customtips texts by language and reason, falling back to the built-in English."""

    language: str = "en"
    texts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, tips: Mapping[str, Any], language: str) -> Tips:
        """``[tips]`` plain keys are in ``language``; ``[tips.<lang>]`` tables add languages."""
        texts: dict[str, dict[str, str]] = {}
        for key, value in tips.items():
            if isinstance(value, Mapping):
                texts.setdefault(key, {}).update(value)
            else:
                texts.setdefault(language, {})[key] = str(value)
        return cls(language, texts)

    def text(self, reason: Reason, language: str | None = None) -> str:
        """The text for ``reason`` in ``language`` (else the site's), at most 64 bytes."""
        for lang in (language, self.language):
            found = self.texts.get(lang or "", {}).get(reason.value)
            if found:
                return _clip(found)
        return _clip(DEFAULT_TIPS[reason])


def _clip(text: str) -> str:
    return text.encode("utf-8")[:64].decode("utf-8", errors="ignore")


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one remote-authentication request."""

    granted: bool
    reason: Reason
    rule: str
    person: Person | None = None
    steps: tuple[str, ...] = ()
    customtips: str = ""

    @property
    def verify_code(self) -> int:
        """The terminal's verify_code for this outcome."""
        return VERIFY_CODES[self.reason]


class _Trail:
    """Collects the steps of one decision and builds its outcome."""

    def __init__(self, door: DoorSettings, tips: Tips) -> None:
        self.steps: list[str] = []
        self.door = door
        self.tips = tips
        self.person: Person | None = None

    def note(self, text: str) -> None:
        """Record one step."""
        self.steps.append(text)

    def end(self, granted: bool, reason: Reason, rule: str, why: str) -> Decision:
        """Record the final step and build the Decision."""
        self.steps.append(f"{'PASS' if granted else 'DENY'} {reason.value}: {why}")
        tip = self.tips.text(reason, self.door.language)
        return Decision(granted, reason, rule, self.person, tuple(self.steps), tip)


def decide(
    event: Event,
    door: DoorSettings,
    view: View,
    now: float,
    replay: Replay | None = None,
    tips: Tips | None = None,
) -> Decision:
    """Decide one remote-auth request at ``door`` from ``view`` at epoch second ``now``."""
    t = _Trail(door, tips or Tips())
    t.person = view.person
    local = schedule.local_time(now, view.tz)
    t.note(f"door {door.name!r}, site time {local.isoformat(timespec='seconds')}")
    t.note(_request(event))
    refused = _refusals(event, view, replay, t)
    if refused is not None:
        return refused
    lockdowns = active_lockdowns(door, view)
    override = _lockdown(lockdowns, view, t)
    if isinstance(override, Decision):
        return override
    if not lockdowns:
        free = free_access_scope(door, view, now)
        if free is not None:
            return t.end(True, Reason.FREE_ACCESS, f"mode:free_access:{free}", "free access")
    for check in (_identity, _validity, _presentation):
        denied = check(event, door, view, now, t)
        if denied is not None:
            return denied
    if override is not None:
        return t.end(True, Reason.GRANTED, override, "member of the lockdown override group")
    if view.person is None:  # only reached when the door trusts the terminal for unknowns
        user_id = event.user.user_id if event.user else ""
        rule = f"door:{door.name}:unknown:terminal"
        return t.end(True, Reason.GRANTED, rule, f"terminal vouches for user {user_id!r}")
    return _permissions(door, view, now, local, t)


def _request(event: Event) -> str:
    """What the terminal reported, without credentials (card or ID numbers never appear)."""
    user = event.user
    who = f"terminal user {user.user_id!r}" if user is not None and user.user_id else "no user id"
    status = event.recognition_type or event.recognize_status
    return (
        f"request: {who}, entry mode {_shown(event.entry_mode)}, score {_shown(event.score)}, "
        f"mask {_shown(event.mask)}, status {_shown(status)}"
    )


def _shown(value: Any) -> str:
    """A value in an explanation step: ``-`` for none, names joined, never a Python repr."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in sorted(value)) or "none"
    return str(value)


def _refusals(event: Event, view: View, replay: Replay | None, t: _Trail) -> Decision | None:
    if replay is not None:
        return t.end(False, Reason.REPLAYED, f"replay:{replay.value}", f"record is {replay.value}")
    if event.blacklisted:
        return t.end(False, Reason.BLACKLISTED, "terminal:blacklist", "terminal user blacklisted")
    person = view.person
    if person is None:
        t.note("no cached person matches the credentials")
        return None
    t.note(f"person {person.id!r} ({person.type}), groups {_shown(view.groups)}")
    if person.blocked:
        return t.end(False, Reason.BLOCKED, f"person:{person.id}:blocked", "person is blocked")
    return None


def active_lockdowns(door: DoorSettings, view: View) -> list[Mode]:
    """The lockdowns in force at ``door``: the site's (if it applies here) and the door's own."""
    modes = []
    if view.site_mode is not None and view.site_mode.lockdown and door.lockdown_applies:
        modes.append(view.site_mode)
    if view.door_mode is not None and view.door_mode.lockdown:
        modes.append(view.door_mode)
    return modes


def _lockdown(lockdowns: list[Mode], view: View, t: _Trail) -> Decision | str | None:
    """A denial, the override rule that lets a member through, or None (no lockdown)."""
    rules = []
    for mode in lockdowns:
        scope = "site" if mode.scope == SITE else f"door {mode.scope!r}"
        group = mode.override_group
        if view.person is not None and group and group in view.groups:
            t.note(f"{scope} lockdown, overridden: member of group {group!r}")
            rules.append(f"mode:lockdown:{mode.scope}:override:{group}")
            continue
        rule = f"mode:lockdown:{mode.scope}"
        return t.end(False, Reason.LOCKDOWN, rule, f"{scope} lockdown, not in its override group")
    return rules[-1] if rules else None


def free_access_scope(door: DoorSettings, view: View, now: float) -> str | None:
    """The scope (``*`` or the door) whose free access is open at ``door`` now, if any."""
    local = schedule.local_time(now, view.tz)
    candidates = []
    if view.door_mode is not None:
        candidates.append(view.door_mode)
    if view.site_mode is not None and door.free_access_applies:
        candidates.append(view.site_mode)
    for mode in candidates:
        if not mode.free_access:
            continue
        if schedule.active(mode.free_schedule, view.schedules, view.holidays, local).active:
            return mode.scope
    return None


def free_access_active(door: DoorSettings, view: View, now: float) -> bool:
    """Whether ``door`` should stand unlocked now (free access on, no lockdown in force)."""
    if active_lockdowns(door, view):
        return False
    return free_access_scope(door, view, now) is not None


def _identity(
    event: Event, door: DoorSettings, view: View, now: float, t: _Trail
) -> Decision | None:
    if event.not_live:
        return t.end(False, Reason.NOT_LIVE, "terminal:liveness", "terminal liveness check failed")
    if view.person is not None:
        return None
    if event.stranger:
        return t.end(False, Reason.STRANGER, "terminal:stranger", "face not in terminal library")
    if door.unknown == "terminal" and event.user is not None and event.user.user_id:
        t.note("unknown to the cache; this door trusts the terminal's own match")
        return None
    return t.end(False, Reason.UNKNOWN_PERSON, "cache:no-match", "no cached person matches")


def _validity(
    event: Event, door: DoorSettings, view: View, now: float, t: _Trail
) -> Decision | None:
    person = view.person
    user = event.user
    windows = []
    if person is not None:
        windows.append((f"person:{person.id}", person.valid_from, person.valid_until))
    if user is not None:
        windows.append(("terminal:guest_time", user.guest_start, user.guest_end))
    for rule, start, stop in windows:
        if start is not None and now < start:
            return t.end(False, Reason.NOT_YET_VALID, f"{rule}:from", f"{rule} starts later")
        if stop is not None and now >= stop:
            return t.end(False, Reason.EXPIRED, f"{rule}:until", f"{rule} has ended")
    return None


def _presentation(
    event: Event, door: DoorSettings, view: View, now: float, t: _Trail
) -> Decision | None:
    mode = event.entry_mode
    if door.entry_modes is not None and mode not in door.entry_modes:
        why = f"entry mode {_shown(mode)} not in {_shown(door.entry_modes)}"
        return t.end(False, Reason.ENTRY_MODE_NOT_ALLOWED, f"door:{door.name}:entry_modes", why)
    if mode is not None and mode not in FACE_MODES:
        return None
    rule = f"door:{door.name}"
    if door.min_score is not None and (event.score is None or event.score < door.min_score):
        why = f"score {_shown(event.score)} below {door.min_score}"
        return t.end(False, Reason.LOW_SCORE, f"{rule}:min_score", why)
    live = event.liveness_score
    if door.min_liveness is not None and live is not None and live < door.min_liveness:
        why = f"liveness {live} below {door.min_liveness}"
        return t.end(False, Reason.LOW_LIVENESS, f"{rule}:min_liveness", why)
    if door.mask_required and event.mask != MASK_WORN:
        why = f"mask state {_shown(event.mask)}"
        return t.end(False, Reason.MASK_REQUIRED, f"{rule}:mask", why)
    return None


def _permissions(
    door: DoorSettings, view: View, now: float, local: datetime, t: _Trail
) -> Decision:
    person = view.person
    assert person is not None
    mine = sorted(
        (p for p in view.permissions if p.door == door.name and p.group in view.groups),
        key=lambda p: p.rule,
    )
    if not mine:
        why = f"no group of the person ({_shown(view.groups)}) may use this door"
        return t.end(False, Reason.NO_PERMISSION, f"door:{door.name}:no-permission", why)
    holiday = None
    for permission in mine:
        check = schedule.active(permission.schedule, view.schedules, view.holidays, local)
        if check.active:
            where = f" ({check.period.text()})" if check.period else ""
            t.note(f"{permission.rule}: open{where}")
            return _anti_passback(door, view, now, permission, t)
        holiday = holiday or check.holiday
        on = f" on {check.holiday.text()}" if check.holiday else ""
        t.note(f"{permission.rule}: closed{on}")
    rule = mine[0].rule
    if holiday is not None:
        return t.end(False, Reason.HOLIDAY, rule, f"closed on {holiday.text()}")
    return t.end(False, Reason.OUTSIDE_SCHEDULE, rule, "no permission's schedule is open")


def _anti_passback(
    door: DoorSettings, view: View, now: float, permission: Permission, t: _Trail
) -> Decision:
    window = door.anti_passback
    if window > 0 and view.last_pass is not None and now - view.last_pass < window:
        why = f"passed here {now - view.last_pass:.0f} s ago (window {window} s)"
        return t.end(False, Reason.ANTI_PASSBACK, f"door:{door.name}:anti_passback", why)
    return t.end(True, Reason.GRANTED, permission.rule, "permission open now")


def tip(reason: Reason, tips: dict[str, str]) -> str:
    """The short text for the terminal's screen, configured or default, at most 64 bytes."""
    return _clip(tips.get(reason.value) or DEFAULT_TIPS[reason])


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
