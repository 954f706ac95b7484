"""Schedules in the site's wall-clock time: midnight wraps, holidays, DST gaps and overlaps."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from edged.decide import schedule
from edged.decide.schedule import Holiday, Period, Schedule

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = Schedule("night", (Period("fri", 22 * 60, 6 * 60),))
OFFICE = Schedule("office", (Period("mon", 8 * 60, 18 * 60), Period("holiday", 10 * 60, 12 * 60)))


def at(text: str, tz: ZoneInfo = BERLIN) -> datetime:
    """Wall-clock time in Berlin from an ISO text (UTC when it ends with Z)."""
    if text.endswith("Z"):
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC).astimezone(tz)
    return datetime.fromisoformat(text).replace(tzinfo=tz)


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        ("2026-03-06T21:59", False),  # Friday before the night shift
        ("2026-03-06T22:00", True),
        ("2026-03-07T00:30", True),  # Saturday: still Friday's period
        ("2026-03-07T05:59", True),
        ("2026-03-07T06:00", False),
        ("2026-03-07T22:30", False),  # Saturday night has no period of its own
    ],
)
def test_periods_wrap_past_midnight(when: str, open_: bool) -> None:
    assert schedule.check(NIGHT, (), at(when)).active is open_


def test_holiday_replaces_the_weekly_plan() -> None:
    easter_monday = (Holiday("Easter Monday", 4, 6, 2026),)
    assert schedule.check(OFFICE, (), at("2026-04-06T09:00")).active
    closed = schedule.check(OFFICE, easter_monday, at("2026-04-06T09:00"))
    assert not closed.active and closed.holiday == easter_monday[0]
    assert schedule.check(OFFICE, easter_monday, at("2026-04-06T11:00")).active
    assert schedule.check(OFFICE, easter_monday, at("2027-04-06T09:00")).active is False  # Tue


def test_yearly_holiday_and_wrap_into_a_holiday() -> None:
    new_year = (Holiday("New Year", 1, 1),)
    assert new_year[0].on(datetime(2031, 1, 1).date())
    # Friday 31 Dec 2027 22:00 → Saturday 1 Jan 06:00: the wrap belongs to Friday's plan
    assert schedule.check(NIGHT, new_year, at("2027-12-31T23:00")).active
    assert schedule.check(NIGHT, new_year, at("2028-01-01T05:00")).active
    # a holiday Friday drops the night shift that starts on it
    friday = (Holiday("Closed", 3, 6, 2026),)
    assert not schedule.check(NIGHT, friday, at("2026-03-07T01:00")).active


def test_dst_gap_skipped_minutes_never_occur_and_neighbours_behave() -> None:
    # 29 March 2026: 02:00 CET jumps to 03:00 CEST; a period 02:00-02:30 never opens that day
    gap = Schedule("gap", (Period("sun", 2 * 60, 2 * 60 + 30),))
    for minute in range(0, 120):
        instant = datetime(2026, 3, 29, 0, 0, tzinfo=UTC).timestamp() + minute * 60
        local = schedule.local_time(instant, BERLIN)
        assert not schedule.check(gap, (), local).active
    span = Schedule("span", (Period("sun", 90, 3 * 60 + 30),))  # 01:30-03:30 local
    assert schedule.check(span, (), at("2026-03-29T00:45Z")).active  # 01:45 CET
    assert schedule.check(span, (), at("2026-03-29T01:15Z")).active  # 03:15 CEST
    assert not schedule.check(span, (), at("2026-03-29T01:30Z")).active  # 03:30 CEST


def test_dst_overlap_repeated_hour_is_open_both_times() -> None:
    # 25 October 2026: 03:00 CEST falls back to 02:00 CET; 02:00-02:30 happens twice
    window = Schedule("w", (Period("sun", 2 * 60, 2 * 60 + 30),))
    first = at("2026-10-25T00:15Z")  # 02:15 CEST
    second = at("2026-10-25T01:15Z")  # 02:15 CET
    assert (first.hour, second.hour) == (2, 2) and first.utcoffset() != second.utcoffset()
    assert schedule.check(window, (), first).active
    assert schedule.check(window, (), second).active
    assert not schedule.check(window, (), at("2026-10-25T01:45Z")).active  # 02:45 CET


@pytest.mark.parametrize(("text", "end", "minutes"), [("08:30", False, 510), ("24:00", True, 1440)])
def test_parse_clock(text: str, end: bool, minutes: int) -> None:
    assert schedule.parse_clock(text, end) == minutes


@pytest.mark.parametrize("text", ["24:00", "8", "08:60", "ab:cd", "25:00"])
def test_parse_clock_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        schedule.parse_clock(text)
