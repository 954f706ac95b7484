"""The door's pure decisions (edged.doors.state): every situation, no pins, no loop, no clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.doors import state
from edged.doors.state import Situation

HOLD_KEYS = st.sampled_from(
    ["free-access", "manual", "terminal:S1:t-1", "fire:S1:t-2", "fire", "schedule"]
)
PULSES = st.sampled_from([None, "grant", "egress", "manual"])
SITUATIONS = st.builds(
    Situation,
    fire=st.booleans(),
    fire_release=st.booleans(),
    lockdown=st.booleans(),
    holds=st.lists(HOLD_KEYS, unique=True, max_size=4).map(tuple),
    pulse=PULSES,
)


@given(SITUATIONS)
def test_the_fire_input_always_releases_a_fire_release_door(s: Situation) -> None:
    if s.fire and s.fire_release:
        assert state.lock(s) == (True, "fire")
        assert state.held(s) and state.refusal(s) is None


@given(SITUATIONS)
def test_a_fire_hold_opens_whatever_else_is_going_on(s: Situation) -> None:
    if any(k.startswith(state.FIRE) for k in s.holds):
        on, why = state.lock(s)
        assert on and state.is_hold(why) and state.held(s)


@given(SITUATIONS)
def test_lockdown_never_opens_but_for_fire_and_egress(s: Situation) -> None:
    if not s.lockdown:
        return
    fire = (s.fire and s.fire_release) or any(k.startswith(state.FIRE) for k in s.holds)
    on, why = state.lock(s)
    assert on == (fire or s.pulse == "egress")
    if not on:
        assert why == "lockdown" and state.refusal(s) == "lockdown"


@given(SITUATIONS)
def test_outside_fire_and_lockdown_any_hold_or_pulse_opens(s: Situation) -> None:
    fire = (s.fire and s.fire_release) or any(k.startswith(state.FIRE) for k in s.holds)
    if fire or s.lockdown:
        return
    on, why = state.lock(s)
    assert on == bool(s.holds or s.pulse)
    assert state.refusal(s) is None
    if s.holds:
        assert why == "hold:" + ",".join(sorted(s.holds)) and state.held(s)
    elif s.pulse:
        assert why == s.pulse and not state.held(s)
    else:
        assert why == "relock"


@given(SITUATIONS)
def test_held_only_when_open_and_the_reason_is_a_hold(s: Situation) -> None:
    on, why = state.lock(s)
    assert state.held(s) == (on and state.is_hold(why))
    assert state.lock(s) == state.lock(
        Situation.of(s.fire, s.fire_release, s.lockdown, list(s.holds), s.pulse)
    )


def test_the_order_of_precedence() -> None:
    everything = Situation(True, True, True, ("manual", "fire:S1:t"), "egress")
    assert state.lock(everything) == (True, "fire")
    assert state.lock(Situation(True, False, True, ("fire:S1:t",), None)) == (True, "fire:S1:t")
    assert state.lock(Situation(True, False, True, ("manual",), "egress")) == (True, "egress")
    assert state.lock(Situation(False, True, True, ("manual",), "grant")) == (False, "lockdown")
    assert state.lock(Situation(holds=("b", "a"), pulse="grant")) == (True, "hold:a,b")
    assert state.lock(Situation()) == (False, "relock")


@given(
    now=st.floats(0, 1e6),
    duration=st.floats(0, 600),
    end=st.none() | st.floats(0, 1e6),
    shunt=st.floats(0, 1e6),
)
def test_a_timed_unlock_is_only_ever_lengthened(
    now: float, duration: float, end: float | None, shunt: float
) -> None:
    pulse = state.extend(now, duration, "egress", end, None if end is None else "grant", shunt)
    assert pulse.end >= now + duration
    assert pulse.shunt_until >= max(shunt, now + duration + state.SHUNT_GRACE)
    if end is None or now + duration > end:
        assert pulse.rearm and (pulse.end, pulse.kind) == (now + duration, "egress")
    else:
        assert not pulse.rearm and (pulse.end, pulse.kind) == (end, "grant")


def test_an_opening_is_authorised_while_unlocked_or_within_the_shunt_window() -> None:
    assert state.authorised_opening(True, 100.0, 0.0)
    assert state.authorised_opening(False, 100.0, 100.0)
    assert not state.authorised_opening(False, 100.1, 100.0)


@pytest.mark.parametrize(
    ("enabled", "opened_in_pulse", "pulsing", "relock"),
    [
        (True, True, True, True),
        (False, True, True, False),
        (True, False, True, False),
        (True, True, False, False),
    ],
)
def test_relock_on_close(enabled: bool, opened_in_pulse: bool, pulsing: bool, relock: bool) -> None:
    assert state.relock_on_close(enabled, opened_in_pulse, pulsing) is relock


def test_remaining() -> None:
    assert state.remaining(None, 5.0) is None
    assert state.remaining(7.25, 5.0) == 2.25
