"""Weekly schedules and holidays, evaluated in the site's wall-clock time: pure, no clock reads.

A period belongs to a day type: a weekday (``mon`` … ``sun``) or a holiday kind (``holiday``
unless the holiday says otherwise). On a holiday the weekly plan is replaced by the periods of the
holiday's kind (none: closed all day). A period whose end is not after its start wraps past
midnight into the next calendar day, whatever that day's type. Times are local wall-clock minutes:
in a DST gap the skipped minutes simply never occur; in an overlap the repeated hour is inside a
period both times, as a site manager reading "02:00-02:30" expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 1440


@dataclass(frozen=True, slots=True)
class Period:
    """One open interval of a schedule, in minutes after local midnight."""

    day: str  # a weekday in DAYS or a holiday kind
    start: int  # 0 … 1439
    end: int  # 1 … 1440; end <= start wraps past midnight

    @property
    def wraps(self) -> bool:
        """The period runs past midnight into the next day."""
        return self.end <= self.start

    def text(self) -> str:
        """``mon 22:00-06:00``."""
        return f"{self.day} {clock_text(self.start)}-{clock_text(self.end)}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A named weekly plan."""

    id: str
    periods: tuple[Period, ...] = ()


@dataclass(frozen=True, slots=True)
class Holiday:
    """A special day: one-off (``year`` set) or every year."""

    name: str
    month: int
    day: int
    year: int | None = None
    kind: str = "holiday"

    def on(self, when: date) -> bool:
        """Whether this holiday falls on ``when``."""
        if (when.month, when.day) != (self.month, self.day):
            return False
        return self.year is None or self.year == when.year

    def text(self) -> str:
        """``New Year (01-01, yearly)``."""
        when = f"{self.year}-" if self.year else ""
        every = "" if self.year else ", yearly"
        return f"{self.name or self.kind} ({when}{self.month:02d}-{self.day:02d}{every})"


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of evaluating one schedule at one instant."""

    active: bool
    period: Period | None  # the period that made it active
    holiday: Holiday | None  # the holiday that governs today, if any


def clock_text(minutes: int) -> str:
    """``08:30`` for 510 minutes; ``24:00`` for the end of the day."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_clock(text: str, end: bool = False) -> int:
    """``HH:MM`` to minutes after midnight; ``24:00`` only as an end."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdecimal() or not minutes.isdecimal() or len(minutes) != 2:
        raise ValueError(f"{text!r} is not a time HH:MM")
    value = int(hours) * 60 + int(minutes)
    limit = DAY_MINUTES if end else DAY_MINUTES - 1
    if int(minutes) > 59 or value > limit:
        raise ValueError(f"{text!r} is not a time of day (00:00-{'24:00' if end else '23:59'})")
    return value


def day_type(when: date, holidays: Iterable[Holiday]) -> tuple[str, Holiday | None]:
    """The plan a calendar day follows: its holiday's kind, else its weekday."""
    matches = sorted((h for h in holidays if h.on(when)), key=lambda h: (h.kind, h.name))
    if matches:
        return matches[0].kind, matches[0]
    return DAYS[when.weekday()], None


def local_time(now: float, tz: tzinfo) -> datetime:
    """The site's wall-clock time at epoch second ``now``."""
    return datetime.fromtimestamp(now, tz)


def check(schedule: Schedule, holidays: Iterable[Holiday], local: datetime) -> Check:
    """Whether ``schedule`` is open at the wall-clock time ``local``."""
    holidays = tuple(holidays)
    today = local.date()
    minute = local.hour * 60 + local.minute
    today_type, holiday = day_type(today, holidays)
    for period in schedule.periods:
        if period.day != today_type:
            continue
        if period.wraps and minute >= period.start:
            return Check(True, period, holiday)
        if not period.wraps and period.start <= minute < period.end:
            return Check(True, period, holiday)
    yesterday_type, _ = day_type(today - timedelta(days=1), holidays)
    for period in schedule.periods:
        if period.day == yesterday_type and period.wraps and minute < period.end:
            return Check(True, period, holiday)
    return Check(False, None, holiday)


def active(
    schedule_id: str | None,
    schedules: Mapping[str, Schedule],
    holidays: Iterable[Holiday],
    local: datetime,
) -> Check:
    """Evaluate a schedule by id; ``None`` means at all times, an unknown id never."""
    if schedule_id is None:
        return Check(True, None, None)
    schedule = schedules.get(schedule_id)
    if schedule is None:
        return Check(False, None, None)
    return check(schedule, holidays, local)
