"""The mapping of edged's people and schedules to a terminal's users, groups and rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
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
    unkept = peoplemap.derive(site(), NOW, TZ, zone_kept=False)
    assert any("time zone is not kept" in text for text in unkept.limits)
    assert not load(unkept).decide("1005", *at(3, 0))  # the users are there, the rules closed
    assert "1005" in unkept.users


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


# ----- the property: the terminal decides as edged does, or denies where it cannot ----------

FIRMWARE_PROFILES = {  # what each simulated firmware takes (edged.sim.state.FIRMWARES)
    "1.0": Profile(int_ids=True, blacklist_type=3),
    "1.1": Profile(int_ids=True, blacklist_type=3),
    "1.2.1": Profile(int_ids=False, blacklist_type=3),
    "1.3.0": Profile(int_ids=False, blacklist_type=5),
}


def _documents() -> Any:
    from hypothesis import strategies as st

    minute = st.integers(0, 95).map(lambda q: q * 15)
    period = st.builds(
        lambda day, start, length: {
            "days": [day],
            "start": f"{start // 60:02d}:{start % 60:02d}",
            "end": f"{(start + length) % 1440 // 60:02d}:{(start + length) % 60:02d}"
            if (start + length) % 1440
            else "24:00",
        },
        st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]),
        minute,
        st.integers(1, 95).map(lambda q: q * 15),
    )
    schedules = st.lists(period, max_size=4).map(
        lambda ps: [{"id": "s1", "periods": ps[:2]}, {"id": "s2", "periods": ps[2:]}]
    )
    groups = st.sets(st.sampled_from(["g1", "g2", "g3", "sec"]), min_size=1, max_size=3)
    window = st.sampled_from([None, None, None, "before", "around", "after"])
    blocked = st.sampled_from([False, False, False, False, False, True])
    person = st.tuples(st.sampled_from(["employee", "visitor"]), blocked, window, groups)
    grant = st.tuples(st.sampled_from(["g1", "g2", "g3"]), st.sampled_from([None, "s1", "s2"]))
    return st.fixed_dictionaries(
        {
            "schedules": schedules,
            "people": st.lists(person, min_size=1, max_size=5),
            "permissions": st.lists(grant, min_size=1, max_size=4, unique=True),
            "holidays": st.lists(st.integers(10, 20), max_size=2, unique=True),
            "anti_passback": st.sampled_from([0, 0, 0, 0, 0, 60]),
            "lockdown": st.sampled_from([None, None, None, None, "sec", ""]),
            "start": st.tuples(st.integers(0, 6), st.one_of(st.just(0), st.integers(0, 95))).map(
                lambda dq: dq[0] * 86400 + dq[1] * 900
            ),
            "later": st.lists(  # minutes after the sync's midnight, often at a period's edge
                st.tuples(
                    st.integers(0, 2),
                    st.one_of(
                        st.integers(0, 1439),
                        st.integers(0, 96).map(lambda q: q * 15),
                        st.integers(1, 96).map(lambda q: q * 15 - 1),
                    ),
                ),
                min_size=1,
                max_size=8,
            ),
            "firmware": st.sampled_from(sorted(FIRMWARE_PROFILES)),
        }
    )


def _import(conn: Any, case: dict[str, Any], t0: float) -> None:
    from edged.access import modes, people

    spans = {"before": (t0 + 7200, None), "around": (t0 - 7200, t0 + 86400), "after": (None, t0)}
    listed = []
    for n, (kind, blocked, window, groups) in enumerate(case["people"]):
        start, stop = spans.get(window or "", (None, None))
        listed.append(
            {
                "id": f"p-{n}",
                "name": f"P {n}",
                "type": kind,
                "blocked": blocked,
                "valid_from": start,
                "valid_until": stop,
                "user_id": str(100 + n),
                "groups": sorted(groups),
            }
        )
    doc = {
        "groups": [{"id": g} for g in ("g1", "g2", "g3", "sec")],
        "people": listed,
        "schedules": case["schedules"],
        "holidays": [{"name": f"h{d}", "date": f"2026-12-{d:02d}"} for d in case["holidays"]],
        "doors": [{"name": "lobby", "anti_passback": case["anti_passback"]}],
        "permissions": [
            {"group": g, "door": "lobby", **({"schedule": s} if s else {})}
            for g, s in case["permissions"]
        ],
    }
    people.apply_document(conn, people.parse_document(doc, TZ), replace=True)
    if case["lockdown"] is not None:
        modes.switch(conn, "*", "lockdown", True, "test", group=case["lockdown"] or None)


def _edges(case: dict[str, Any], midnight: datetime) -> list[tuple[int, int]]:
    """(day, minute) a minute either side of every period's start and end, on its own days."""
    from edged.decide.schedule import DAYS

    out = set()
    for offset in range(8):
        date = midnight + timedelta(days=offset)
        kind = "holiday" if date.day in case["holidays"] else DAYS[date.weekday()]
        for sched in case["schedules"]:
            for p in sched["periods"]:
                if p["days"] != [kind]:
                    continue
                start = int(p["start"][:2]) * 60 + int(p["start"][3:])
                stop = int(p["end"][:2]) * 60 + int(p["end"][3:])
                over = 1 if stop <= start else 0  # wraps into the next day
                for day, minute in ((0, start - 1), (0, start), (over, stop - 1), (over, stop)):
                    out.add((offset + day + minute // 1440, minute % 1440))
    return sorted(out)


def test_after_a_sync_the_terminal_decides_as_edged_or_denies() -> None:
    import tempfile

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from edged.access import doorpeople, lookup
    from edged.decide import policy
    from edged.model import Event, Kind, User
    from edged.store import events as store
    from edged.terminals.peoplesync import Held, plan

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_documents(), st.data())
    def check(case: dict[str, Any], data: Any) -> None:
        t0 = datetime(2026, 12, 7, tzinfo=TZ).timestamp() + case["start"]
        profile = FIRMWARE_PROFILES[case["firmware"]]
        with tempfile.TemporaryDirectory() as folder:
            db = store.open_database(Path(folder) / "edged.db")
            conn = db.conn
            try:
                _import(conn, case, t0)
                desired = peoplemap.derive(doorpeople.load(conn, "lobby"), t0, TZ, profile)
                library = Library(profile.blacklist_type, profile.int_ids)
                empty: dict[str, dict[str, Held]] = {k: {} for k in ("rule", "group", "user")}
                for change in plan(desired, empty, {}):  # in order: every reference exists
                    assert change.body is not None
                    put = getattr(library, f"put_{change.kind}")
                    put(change.body, 1)
                midnight = datetime.fromtimestamp(t0, TZ).replace(hour=0, minute=0)
                moments = _edges(case, midnight)
                if moments:
                    case["later"] += data.draw(st.lists(st.sampled_from(moments), max_size=12))
                for days, minute in case["later"]:
                    t = (midnight + timedelta(days=days, minutes=minute)).timestamp()
                    if t < t0:
                        continue
                    if desired.next_change is not None and t >= desired.next_change:
                        continue  # the sync runs again then
                    for n in range(len(case["people"])):
                        uid = str(100 + n)
                        event = Event(
                            Kind.AUTH,
                            "S",
                            f"k{n}",
                            user=User(user_id=uid),
                            entry_mode=1,
                            score=0.99,
                        )
                        settings_, view = lookup.load(conn, event, "lobby", t, TZ)
                        edged = policy.decide(event, settings_, view, t).granted
                        local = datetime.fromtimestamp(t, TZ).replace(tzinfo=None)
                        terminal = library.decide(uid, local, int(t * 1000))
                        where = f"person {n} at {local} ({case['firmware']})"
                        if terminal:
                            assert edged, f"the terminal lets in whom edged refuses: {where}"
                        elif desired.exact:
                            assert not edged, f"the terminal refuses whom edged lets in: {where}"
            finally:
                conn.close()

    check()
