"""The mapping of edged's people and schedules to a terminal's users, groups and rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edged.access.doorpeople import Member, Site
from edged.decide.policy import DoorSettings, Mode, Permission
from edged.decide.schedule import Holiday, Period, Schedule
from edged.sim.library import Library
from edged.terminals import peoplemap
from edged.terminals.peoplemap import Profile

TZ = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 12, 14, 10, 0, tzinfo=TZ).timestamp()  # a Monday


def site(**kw: Any) -> Site:
    base: dict[str, Any] = {
        "door": DoorSettings("lobby"),
        "permissions": (Permission("staff", "lobby", "office"), Permission("night", "lobby", None)),
        "schedules": {"office": Schedule("office", (Period("mon", 480, 1080),))},
        "people": (
            Member("e-1", "Ann", groups=frozenset({"staff"}), face="a" * 64),
            Member("e-2", "Bob", groups=frozenset({"staff"}), blocked=True),
            Member("e-3", "Cy", groups=frozenset({"staff"}), valid_until=NOW - 1),
            Member("e-4", "Di", groups=frozenset({"other"})),
            Member(
                "v-1",
                "Vic",
                type="visitor",
                groups=frozenset({"staff"}),
                valid_from=NOW - 10,
                valid_until=NOW + 3600,
            ),
            Member(
                "e-5",
                "Ed",
                groups=frozenset({"night", "staff"}),
                credentials=(("user_id", "1005"),),
            ),
        ),
    }
    base.update(kw)
    return Site(**base)


def load(desired: peoplemap.Desired, profile: Profile | None = None) -> Library:
    profile = profile or Profile()
    library = Library(profile.blacklist_type, profile.int_ids)
    for body in desired.rules.values():
        library.put_rule(body, 1)
    for body in desired.groups.values():
        library.put_group(body, 1)
    for body in desired.users.values():
        library.put_user(body, 1)
    return library


def at(hour: int, minute: int = 0, day: int = 14) -> tuple[datetime, int]:
    when = datetime(2026, 12, day, hour, minute, tzinfo=TZ)
    return when.replace(tzinfo=None), int(when.timestamp() * 1000)


def test_who_is_on_the_terminal_and_in_which_groups() -> None:
    desired = peoplemap.derive(site(), NOW, TZ)
    assert sorted(desired.person_of.values()) == ["e-1", "e-5", "v-1"]  # not blocked, expired, …
    assert desired.faces == {"e-1": "a" * 64}
    assert desired.users["1005"]["name"] == "Ed" and len(desired.users["1005"]["groups"]) == 2
    kinds = sorted((g["name"], g["type"]) for g in desired.groups.values())
    assert kinds == [("night", 1), ("staff", 1), ("staff (visitors)", 2)]
    visitor = desired.users["v-1"]
    assert visitor["type"] == 2 and visitor["guest_time_end"] == int((NOW + 3600) * 1000) - 1
    assert desired.next_change == NOW + 3600  # Vic's end
    assert desired.exact and not desired.limits
    again = peoplemap.derive(site(), NOW, TZ)
    assert again.groups == desired.groups and again.rules == desired.rules  # stable ids


def test_the_rules_decide_as_the_schedules_do() -> None:
    library = load(peoplemap.derive(site(), NOW, TZ))
    assert library.decide("e-1", *at(8, 0)) and library.decide("e-1", *at(17, 59))
    assert not library.decide("e-1", *at(18, 0)) and not library.decide("e-1", *at(7, 59))
    assert not library.decide("e-1", *at(10, 0, day=15))  # Tuesday: no period
    assert library.decide("1005", *at(3, 0, day=15))  # night: always


def test_a_period_past_midnight_and_a_holiday_after_it() -> None:
    night = Schedule("late", (Period("mon", 1320, 360), Period("holiday", 600, 660)))
    holidays = (Holiday("Xmas", 12, 15, 2026),)  # the Tuesday after
    desired = peoplemap.derive(
        site(
            permissions=(Permission("staff", "lobby", "late"),),
            schedules={"late": night},
            holidays=holidays,
        ),
        NOW,
        TZ,
    )
    library = load(desired)
    assert library.decide("e-1", *at(23, 0))
    assert library.decide("e-1", *at(5, 59, day=15))  # the tail runs into the holiday
    assert not library.decide("e-1", *at(6, 0, day=15))
    assert library.decide("e-1", *at(10, 30, day=15))  # the holiday's own period
    assert library.decide("e-1", *at(23, 0, day=21)) and library.decide("e-1", *at(1, 0, day=22))


def test_what_cannot_be_expressed_errs_to_deny() -> None:
    for door in (
        DoorSettings("lobby", anti_passback=60),
        DoorSettings("lobby", entry_modes=frozenset({1})),
    ):
        desired = peoplemap.derive(site(door=door), NOW, TZ)
        assert desired.limits and not desired.exact
        library = load(desired)
        assert not library.decide("1005", *at(3, 0)) and not library.decide("e-1", *at(9, 0))
    many = Schedule("busy", tuple(Period("mon", m * 60, m * 60 + 30) for m in range(14)))
    desired = peoplemap.derive(
        site(permissions=(Permission("staff", "lobby", "busy"),), schedules={"busy": many}),
        NOW,
        TZ,
    )
    assert any("14 periods" in text for text in desired.limits)
    library = load(desired)
    assert library.decide("e-1", *at(11, 10)) and not library.decide("e-1", *at(13, 10))
    india = peoplemap.derive(site(), NOW, ZoneInfo("Asia/Kolkata"))
    assert any("whole hour" in text for text in india.limits)


def test_a_lockdown_leaves_only_its_override_group() -> None:
    lockdown = Mode("*", lockdown=True, override_group="security")
    people = (*site().people, Member("s-1", "Sec", groups=frozenset({"security"})))
    library = load(peoplemap.derive(site(site_mode=lockdown, people=people), NOW, TZ))
    assert library.decide("s-1", *at(3, 0)) and not library.decide("1005", *at(3, 0))
    nobody = Mode("lobby", lockdown=True)
    library = load(peoplemap.derive(site(door_mode=nobody), NOW, TZ))
    assert not library.decide("1005", *at(3, 0))


def test_old_firmware_takes_numbers_only() -> None:
    desired = peoplemap.derive(site(), NOW, TZ, Profile(int_ids=True, blacklist_type=3))
    assert list(desired.users) == ["1005"] and desired.users["1005"]["user_id"] == 1005
    assert "not a number" in desired.refused["e-1"]
    assert all(isinstance(g, int) for g in desired.users["1005"]["groups"])
    load(desired, Profile(int_ids=True, blacklist_type=3))
