"""The pure decision function: one table-driven case per reason, and properties."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.decide import policy
from edged.decide.policy import DoorSettings, Mode, Permission, Person, Reason, Tips, View
from edged.decide.schedule import DAYS, Holiday, Period, Schedule
from edged.model import Event, Kind, Replay, User

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 2 March 2026, 10:00 in Berlin
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN).timestamp()
EVENING = datetime(2026, 3, 2, 20, 0, tzinfo=BERLIN).timestamp()
OFFICE = Schedule("office", tuple(Period(d, 8 * 60, 18 * 60) for d in DAYS[:5]))
ANN = Person("e-1", "Ann")


def event(**fields: Any) -> Event:
    """A live, recognised remote-auth request by Ann's terminal user id."""
    user = fields.pop("user", User(user_id="e-1", name="Ann", type=1))
    base: dict[str, Any] = {
        "kind": Kind.AUTH,
        "serial": "S1",
        "dedup_key": "k",
        "occurred_at": NOW,
        "firmware": "old",
        "recognize_status": 4,
        "score": 0.95,
        "entry_mode": 1,
        "mask": 1,
        "user": user,
    }
    base.update(fields)
    return Event(**base)


def view(**fields: Any) -> View:
    """Ann in group staff, allowed at 'lobby' at all times."""
    base: dict[str, Any] = {
        "tz": BERLIN,
        "person": ANN,
        "groups": frozenset({"staff"}),
        "permissions": (Permission("staff", "lobby"),),
    }
    base.update(fields)
    return View(**base)


LOBBY = DoorSettings("lobby")
OFFICE_ONLY = {
    "permissions": (Permission("staff", "lobby", "office"),),
    "schedules": {"office": OFFICE},
}

# (reason, event fields, door fields, view fields, replay, now)
CASES: list[tuple[Reason, dict[str, Any], dict[str, Any], dict[str, Any], Replay | None, float]] = [
    (Reason.GRANTED, {}, {}, {}, None, NOW),
    (Reason.FREE_ACCESS, {}, {}, {"site_mode": Mode("*", free_access=True)}, None, NOW),
    (Reason.REPLAYED, {}, {}, {}, Replay.STALE, NOW),
    (Reason.BLACKLISTED, {"user": User(user_id="e-1", type=5)}, {}, {}, None, NOW),
    (Reason.BLACKLISTED, {"user": User(user_id="e-1", type=3)}, {}, {}, None, NOW),
    (Reason.BLOCKED, {}, {}, {"person": Person("e-1", "Ann", blocked=True)}, None, NOW),
    (Reason.LOCKDOWN, {}, {}, {"site_mode": Mode("*", lockdown=True)}, None, NOW),
    (Reason.LOCKDOWN, {}, {}, {"door_mode": Mode("lobby", lockdown=True)}, None, NOW),
    (Reason.NOT_LIVE, {"recognize_status": 1}, {}, {}, None, NOW),
    (Reason.STRANGER, {"recognize_status": 3, "user": None}, {}, {"person": None}, None, NOW),
    (Reason.UNKNOWN_PERSON, {}, {}, {"person": None, "groups": frozenset()}, None, NOW),
    (Reason.NOT_YET_VALID, {}, {}, {"person": Person("e-1", "A", valid_from=NOW + 9)}, None, NOW),
    (Reason.EXPIRED, {}, {}, {"person": Person("e-1", "A", valid_until=NOW)}, None, NOW),
    (Reason.NOT_YET_VALID, {"user": User("e-1", guest_start=NOW + 60)}, {}, {}, None, NOW),
    (Reason.EXPIRED, {"user": User("e-1", guest_end=NOW - 60)}, {}, {}, None, NOW),
    (
        Reason.ENTRY_MODE_NOT_ALLOWED,
        {"entry_mode": 1},
        {"entry_modes": frozenset({3})},
        {},
        None,
        NOW,
    ),
    (Reason.LOW_SCORE, {"score": 0.7}, {"min_score": 0.8}, {}, None, NOW),
    (Reason.LOW_LIVENESS, {"liveness_score": 0.5}, {"min_liveness": 0.9}, {}, None, NOW),
    (Reason.MASK_REQUIRED, {"mask": 1}, {"mask_required": True}, {}, None, NOW),
    (Reason.NO_PERMISSION, {}, {}, {"permissions": ()}, None, NOW),
    (Reason.NO_PERMISSION, {}, {}, {"groups": frozenset({"visitors"})}, None, NOW),
    (
        Reason.HOLIDAY,
        {},
        {},
        {**OFFICE_ONLY, "holidays": (Holiday("Closed", 3, 2),)},
        None,
        NOW,
    ),
    (Reason.OUTSIDE_SCHEDULE, {}, {}, OFFICE_ONLY, None, EVENING),
    (Reason.ANTI_PASSBACK, {}, {"anti_passback": 60}, {"last_pass": NOW - 10}, None, NOW),
]


@pytest.mark.parametrize(("reason", "ev", "door", "vw", "replay", "now"), CASES)
def test_every_reason(
    reason: Reason,
    ev: dict[str, Any],
    door: dict[str, Any],
    vw: dict[str, Any],
    replay: Replay | None,
    now: float,
) -> None:
    settings_ = dataclasses.replace(LOBBY, **door)
    decision = policy.decide(event(**ev), settings_, view(**vw), now, replay)
    assert decision.reason is reason, decision.steps
    assert decision.granted is (reason in (Reason.GRANTED, Reason.FREE_ACCESS))
    assert decision.verify_code == policy.VERIFY_CODES[reason]
    assert decision.customtips == policy.DEFAULT_TIPS[reason]
    assert decision.steps[-1].startswith("PASS" if decision.granted else "DENY")


def test_the_table_covers_every_reason() -> None:
    assert {case[0] for case in CASES} == set(Reason)
    assert set(policy.VERIFY_CODES) == set(Reason) == set(policy.DEFAULT_TIPS)


def test_granted_names_the_permission_that_matched() -> None:
    decision = policy.decide(event(), LOBBY, view(**OFFICE_ONLY), NOW)
    assert decision.granted and decision.rule == "permission:staff@lobby/office"
    assert any("mon 08:00-18:00" in step for step in decision.steps)


def test_anti_passback_lets_through_after_the_window() -> None:
    door = dataclasses.replace(LOBBY, anti_passback=60)
    assert policy.decide(event(), door, view(last_pass=NOW - 61), NOW).granted


def test_lockdown_override_group_passes_but_identity_checks_still_apply() -> None:
    mode = Mode("*", lockdown=True, override_group="security")
    vw = view(site_mode=mode, groups=frozenset({"security"}), permissions=())
    decision = policy.decide(event(), LOBBY, vw, NOW)
    assert decision.granted and decision.rule == "mode:lockdown:*:override:security"
    assert policy.decide(event(recognize_status=1), LOBBY, vw, NOW).reason is Reason.NOT_LIVE


def test_lockdown_beats_free_access_and_respects_door_opt_out() -> None:
    mode = Mode("*", lockdown=True, free_access=True)
    assert policy.decide(event(), LOBBY, view(site_mode=mode), NOW).reason is Reason.LOCKDOWN
    exempt = dataclasses.replace(LOBBY, lockdown_applies=False, free_access_applies=False)
    assert policy.decide(event(), exempt, view(site_mode=mode), NOW).reason is Reason.GRANTED
    assert not policy.free_access_active(LOBBY, view(site_mode=mode), NOW)


def test_free_access_follows_its_schedule() -> None:
    mode = Mode("lobby", free_access=True, free_schedule="office")
    vw = view(door_mode=mode, schedules={"office": OFFICE}, person=None)
    assert policy.free_access_active(LOBBY, vw, NOW)
    assert not policy.free_access_active(LOBBY, vw, EVENING)
    assert policy.decide(event(), LOBBY, vw, NOW).reason is Reason.FREE_ACCESS
    assert policy.decide(event(), LOBBY, vw, EVENING).reason is Reason.UNKNOWN_PERSON


def test_door_may_trust_the_terminal_for_unknown_people() -> None:
    door = dataclasses.replace(LOBBY, unknown="terminal")
    decision = policy.decide(event(), door, view(person=None, groups=frozenset()), NOW)
    assert decision.granted and decision.rule == "door:lobby:unknown:terminal"
    stranger = event(recognize_status=3)
    assert policy.decide(stranger, door, view(person=None), NOW).reason is Reason.STRANGER


def test_score_and_mask_apply_to_face_modes_only() -> None:
    door = dataclasses.replace(LOBBY, min_score=0.9, mask_required=True)
    card = event(entry_mode=3, score=None, mask=0)
    assert policy.decide(card, door, view(), NOW).granted
    assert not policy.decide(event(score=None), door, view(), NOW).granted


def test_tips_by_language_with_fallbacks() -> None:
    tips = Tips.from_config(
        {"granted": "Hello", "de": {"granted": "Willkommen", "no_permission": "Kein Zutritt"}},
        "en",
    )
    assert tips.text(Reason.GRANTED) == "Hello"
    assert tips.text(Reason.GRANTED, "de") == "Willkommen"
    assert tips.text(Reason.EXPIRED, "de") == "Expired"  # neither German nor site: built in
    assert tips.text(Reason.GRANTED, "fr") == "Hello"
    german = dataclasses.replace(LOBBY, language="de")
    decision = policy.decide(event(), german, view(permissions=()), NOW, tips=tips)
    assert decision.customtips == "Kein Zutritt"
    assert len(Tips.from_config({"granted": "é" * 40}, "en").text(Reason.GRANTED).encode()) <= 64


def test_replay_of() -> None:
    assert policy.replay_of(event(occurred_at=None), NOW, 30) is Replay.NO_TIME
    assert policy.replay_of(event(occurred_at=NOW - 31), NOW, 30) is Replay.STALE
    assert policy.replay_of(event(occurred_at=NOW + 31), NOW, 30) is Replay.FUTURE
    assert policy.replay_of(event(), NOW, 30) is None


# ----- properties ---------------------------------------------------------------------------

users = st.builds(
    User,
    user_id=st.sampled_from(["e-1", "x", None]),
    type=st.sampled_from([1, 2, 3, 5, None]),
    guest_start=st.none() | st.floats(NOW - 1e6, NOW + 1e6),
    guest_end=st.none() | st.floats(NOW - 1e6, NOW + 1e6),
)
events = st.builds(
    event,
    recognize_status=st.integers(0, 6),
    score=st.none() | st.floats(0, 1),
    liveness_score=st.none() | st.floats(0, 1),
    mask=st.sampled_from([0, 1, 2, None]),
    entry_mode=st.none() | st.integers(1, 12),
    user=st.none() | users,
)
modes = st.none() | st.builds(
    Mode,
    scope=st.just("*"),
    lockdown=st.booleans(),
    override_group=st.sampled_from([None, "staff"]),
    free_access=st.booleans(),
)
doors = st.builds(
    DoorSettings,
    name=st.just("lobby"),
    min_score=st.none() | st.floats(0, 1),
    mask_required=st.booleans(),
    anti_passback=st.integers(0, 100),
    unknown=st.sampled_from(["deny", "terminal"]),
    lockdown_applies=st.booleans(),
    free_access_applies=st.booleans(),
)


@settings(deadline=None)
@given(events, doors, modes, st.floats(NOW - 1e7, NOW + 1e7))
def test_a_blocked_person_never_passes(
    ev: Event, door: DoorSettings, mode: Any, now: float
) -> None:
    blocked = Person("e-1", "Ann", blocked=True)
    vw = view(person=blocked, site_mode=mode, door_mode=mode)
    assert not policy.decide(ev, door, vw, now).granted


@settings(deadline=None)
@given(events, doors, st.sampled_from(list(Replay)))
def test_replayed_never_passes(ev: Event, door: DoorSettings, replay: Replay) -> None:
    vw = view(site_mode=Mode("*", free_access=True))
    assert not policy.decide(ev, door, vw, NOW, replay).granted


WEEK = 7 * 1440


def open_by_oracle(periods: list[Period], now: float, tz: ZoneInfo) -> bool:
    """An independent reading: the periods laid out as minutes of a week, wrapping Sunday."""
    local = datetime.fromtimestamp(now, tz)
    at = local.weekday() * 1440 + local.hour * 60 + local.minute
    for p in periods:
        start = DAYS.index(p.day) * 1440 + p.start
        length = (p.end - p.start) % 1440 or 1440
        if (at - start) % WEEK < length:
            return True
    return False


period_lists = st.lists(
    st.builds(
        Period,
        day=st.sampled_from(DAYS),
        start=st.integers(0, 1439),
        end=st.integers(1, 1440),
    ).filter(lambda p: p.start != p.end),
    max_size=4,
)
# instants around Berlin's 2026 DST changes (29 March, 25 October), and anywhere in the year
dst_times = st.one_of(
    st.integers(1774746000 - 2 * 86400, 1774746000 + 2 * 86400),
    st.integers(1792890000 - 2 * 86400, 1792890000 + 2 * 86400),
    st.integers(1767225600, 1798761600),
).map(float)


@settings(max_examples=300, deadline=None)
@given(period_lists, dst_times)
def test_schedules_grant_exactly_the_wall_clock_minutes(periods: list[Period], now: float) -> None:
    vw = view(
        permissions=(Permission("staff", "lobby", "s"),),
        schedules={"s": Schedule("s", tuple(periods))},
    )
    decision = policy.decide(event(occurred_at=now), LOBBY, vw, now)
    assert decision.granted is open_by_oracle(periods, now, BERLIN), decision.steps


@settings(deadline=None)
@given(st.lists(period_lists, min_size=1, max_size=3), dst_times, events)
def test_nobody_passes_outside_every_schedule(
    plans: list[list[Period]], now: float, ev: Event
) -> None:
    perms = tuple(Permission("staff", "lobby", f"s{i}") for i in range(len(plans)))
    scheds = {f"s{i}": Schedule(f"s{i}", tuple(p)) for i, p in enumerate(plans)}
    door = dataclasses.replace(LOBBY, unknown="deny")
    decision = policy.decide(ev, door, view(permissions=perms, schedules=scheds), now)
    if decision.granted:
        assert any(open_by_oracle(p, now, BERLIN) for p in plans)
