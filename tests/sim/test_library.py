"""The simulated terminal's library: the guide's limits and codes, and its local decision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from edged.sim import library as lib
from edged.sim.library import Library, LibraryError

NOW = 1_780_000_000_000


def period(start: str, end: str) -> dict[str, Any]:
    def point(text: str) -> dict[str, int]:
        h, m, s = (int(x) for x in text.split(":"))
        return {"hour": h, "min": m, "sec": s}

    return {"start_time": point(start), "end_time": point(end)}


def rule(rid: str = "1", **days: Any) -> dict[str, Any]:
    schedule = {"onset_point": 1, "expire_point": lib.MAX_POINT - 1, **days}
    return {"rule_id": rid, "name": f"r{rid}", "schedule": schedule}


def refused(code: int, call: Any, *args: Any) -> str:
    with pytest.raises(LibraryError) as caught:
        call(*args)
    assert caught.value.code == code
    return caught.value.msg


def test_order_references_and_types_are_enforced() -> None:
    library = Library()
    assert "group 10 does not exist" in refused(
        409, library.put_user, {"user_id": "a", "name": "A", "groups": ["10"]}, NOW
    )
    assert "rule 1 does not exist" in refused(
        409, library.put_group, {"group_id": "10", "name": "g", "rule_id": "1"}, NOW
    )
    library.put_rule(rule("1"), NOW)
    library.put_group({"group_id": "10", "name": "g", "rule_id": "1"}, NOW)
    library.put_group({"group_id": "20", "name": "v", "type": 2}, NOW)
    library.put_user({"user_id": "a", "name": "A", "groups": ["10"]}, NOW)
    assert "of type 2, not 1" in refused(
        409, library.put_user, {"user_id": "b", "name": "B", "groups": ["20"]}, NOW
    )
    assert "type cannot change" in refused(
        409, library.put_user, {"user_id": "a", "name": "A", "type": 2}, NOW
    )
    assert "still has user a" in refused(409, library.delete_group, "10")
    assert "used by group 10" in refused(409, library.delete_rule, "1")
    assert "has users of type 1" in refused(
        409, library.put_group, {"group_id": "10", "name": "g", "type": 2}, NOW
    )
    library.delete_user("a")
    library.delete_group("10")
    library.delete_rule("1")
    assert refused(404, library.delete_user, "a") == "no user a"


def test_limits_of_the_guide() -> None:
    library = Library()
    for n in range(lib.MAX_RULES):
        library.put_rule(rule(str(n)), NOW)
    assert "at most 256 rules" in refused(409, library.put_rule, rule("x"), NOW)
    library.put_rule(rule("0"), NOW + 1)  # replacing one is not a new one
    for n in range(lib.MAX_GROUPS):
        library.put_group({"group_id": str(n), "name": f"g{n}"}, NOW)
    assert "at most 256 groups" in refused(
        409, library.put_group, {"group_id": "x", "name": "x"}, NOW
    )
    many = [period("00:00:00", "00:00:01")] * 13
    assert "at most 12 periods" in refused(409, library.put_rule, rule("0", mon_period=many), NOW)
    days = [{"day": n + 1} for n in range(32)]
    assert "at most 31" in refused(409, library.put_rule, rule("0", special_days=days), NOW)
    assert "longer than 128 bytes" in refused(
        400, library.put_user, {"user_id": "x" * 129, "name": "X"}, NOW
    )
    assert "1-128 bytes" in refused(400, library.put_user, {"user_id": "x", "name": ""}, NOW)
    late = {"rule_id": "0", "name": "r", "schedule": {"onset_point": 1, "expire_point": 2**63}}
    assert "expire_point" in refused(400, library.put_rule, late, NOW)


def test_blacklist_type_and_integer_ids_follow_the_firmware() -> None:
    old = Library(blacklist_type=3, int_ids=True)
    assert "type must be one of 1, 2, 3" in refused(
        400, old.put_user, {"user_id": 5, "name": "X", "type": 5}, NOW
    )
    assert "must be an integer" in refused(400, old.put_user, {"user_id": "e-1", "name": "X"}, NOW)
    assert "1..999998" in refused(400, old.put_user, {"user_id": 1_000_000, "name": "X"}, NOW)
    old.put_user({"user_id": 7, "name": "X", "type": 3}, NOW)
    assert old.shown(old.users["7"])["user_id"] == 7
    assert not old.decide("7", datetime(2026, 6, 1, 12), NOW)
    new = Library()
    assert "type must be one of 1, 2, 5" in refused(
        400, new.put_user, {"user_id": "7", "name": "X", "type": 3}, NOW
    )


def test_the_local_decision_follows_rules_special_days_and_guest_time() -> None:
    library = Library()
    office = [period("08:00:00", "11:59:59")]
    library.put_rule(
        rule(
            "1",
            mon_period=office,
            the_period=office,
            special_days=[{"year": 2026, "month": 12, "day": 22, "today_period": []}],
        ),
        NOW,
    )
    library.put_rule(rule("2"), NOW)  # every timetable empty: never
    library.put_group({"group_id": "10", "name": "g", "rule_id": "1"}, NOW)
    library.put_group({"group_id": "11", "name": "n", "rule_id": "2"}, NOW)
    library.put_group({"group_id": "20", "name": "v", "type": 2, "rule_id": "1"}, NOW)
    library.put_user({"user_id": "a", "name": "A", "groups": ["10", "11"]}, NOW)
    library.put_user({"user_id": "n", "name": "N", "groups": ["11"]}, NOW)
    library.put_user({"user_id": "z", "name": "Z"}, NOW)
    guest = {"guest_time_start": NOW, "guest_time_end": NOW + 3_600_000}
    library.put_user({"user_id": "v", "name": "V", "type": 2, "groups": ["20"], **guest}, NOW)
    monday = datetime(2026, 12, 14, 8, 0)  # a Monday
    assert library.decide("a", monday, NOW)
    assert library.decide("a", monday.replace(hour=11, minute=59, second=59), NOW)
    assert not library.decide("a", monday.replace(hour=12), NOW)
    assert library.decide("a", datetime(2026, 12, 15, 9), NOW)  # Tuesday: the_period
    assert not library.decide("a", datetime(2026, 12, 16, 9), NOW)  # Wednesday: none
    assert not library.decide("a", datetime(2026, 12, 22, 9), NOW)  # a special day, closed
    assert not library.decide("n", monday, NOW) and not library.decide("z", monday, NOW)
    assert not library.decide("ghost", monday, NOW)
    assert library.decide("v", monday, NOW + 1000)
    assert not library.decide("v", monday, NOW + 3_600_001)  # past the guest time


def test_info_lists_ids_and_update_times() -> None:
    library = Library()
    library.put_rule(rule("1"), NOW)
    library.put_group({"group_id": "10", "name": "g", "rule_id": "1"}, NOW + 1)
    library.put_user({"user_id": "a", "name": "A", "groups": ["10"]}, NOW + 2)
    assert library.info() == {
        "groups": [{"id": "10", "update_at": NOW + 1}],
        "users": [{"id": "a", "update_at": NOW + 2, "groups": ["10"]}],
        "rules": [{"id": "1", "update_at": NOW}],
    }
    library.clear()
    assert library.info() == {"groups": [], "users": [], "rules": []}
