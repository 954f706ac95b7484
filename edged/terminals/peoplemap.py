"""edged's people, permissions and schedules for one door, as a terminal's users, groups and rules.

Pure: plain values in (``Site``, ``now``, the terminal's ``Profile``), the terminal's desired
library out (``Desired``). The mapping, and what the terminal cannot express, are documented in
docs/terminals.md ("People on the terminals"); in short:

- a **user** per person who may use the door now: not blocked, inside their validity window, in
  a group with a permission at the door (or, during a lockdown, in its override group). Nobody
  else is on the terminal: a blocked or expired person is *removed* (not blacklisted), so the
  terminal refuses them as a stranger, and a person who becomes valid later is added then
  (``Desired.next_change``);
- a **group** per edged group with a permission at the door and terminal user type (1 employee,
  2 visitor: a terminal group holds users of one type only);
- a **rule** per distinct union of the group's schedules at the door, in the site's wall-clock
  time (the terminal's whole-hour zone is kept at the site's current offset by the clock sync),
  holidays and the day after each as special days, wrapped periods split at midnight;
- what the terminal cannot decide as edged would, errs to deny: anti-passback or restricted
  entry modes at the door, two lockdowns with different override groups, a site offset that is
  not a whole hour, more than 12 periods a day (the later ones close) or more than 31 special
  days ahead (the rule expires before the first one it cannot hold). Free access is not
  expressed: the terminal keeps its rules and cannot let strangers in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from edged.access.doorpeople import Member, Site
from edged.decide import policy, schedule
from edged.decide.schedule import DAYS, Holiday, Schedule
from edged.store.urgency import Urgency, paced

MAX_PERIODS = 12
MAX_SPECIAL_DAYS = 31
MAX_GROUPS = 256
MAX_RULES = 256
MAX_ID_BYTES = 128
MAX_OLD_USER_ID = 999_999
LAST_SECOND = 86_399
FAR = 4_102_415_998_000  # the rules' expiry when nothing ends them (before 2099-12-31, ms)
LOOKAHEAD_DAYS = 400
DAY_KEYS = (
    "mon_period",
    "the_period",
    "wed_period",
    "thur_period",
    "fri_period",
    "sat_period",
    "sun_period",
)  # as the guide spells them: Tuesday the_period, Thursday thur_period
VISITOR, EMPLOYEE = 2, 1
ALWAYS = "always"


@dataclass(frozen=True)
class Profile:
    """What the terminal's firmware takes (docs/terminal protocol, section 6)."""

    int_ids: bool = False  # 1.0 and 1.1.0: user ids are integers 1..999998
    blacklist_type: int = 5


@dataclass
class Desired:
    """The terminal's library as it should be, and what could not be put there."""

    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # without the avatar
    faces: dict[str, str] = field(default_factory=dict)  # user id -> face digest
    person_of: dict[str, str] = field(default_factory=dict)  # user id -> person id
    refused: dict[str, str] = field(default_factory=dict)  # person id -> why not on it
    limits: list[str] = field(default_factory=list)  # what errs to deny on the terminal
    notes: list[str] = field(default_factory=list)  # what the terminal decides otherwise
    next_change: float | None = None  # when the desired state changes by itself

    @property
    def exact(self) -> bool:
        """Whether the terminal decides every known person as edged would."""
        return not self.limits and not any(n.startswith("free access") for n in self.notes)

    def of_kind(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The library by kind (``rule``, ``group``, ``user``), bodies by id."""
        return {"rule": self.rules, "group": self.groups, "user": self.users}


# ----- helpers ------------------------------------------------------------------------------


def _number(key: str, taken: set[str]) -> str:
    """A stable numeric id for ``key`` (integers suit every firmware), unique among ``taken``."""
    salt = 0
    while True:
        text = str(int(hashlib.sha256(f"{key}#{salt}".encode()).hexdigest()[:12], 16) % 10**9)
        if text not in taken:
            taken.add(text)
            return text
        salt += 1


def _clip(text: str, limit: int = 128) -> str:
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def digest(item: Any) -> str:
    """A short hash of what is sent (compared with what was sent last)."""
    text = json.dumps(item, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _point(second: int) -> dict[str, int]:
    return {"hour": second // 3600, "min": second // 60 % 60, "sec": second % 60}


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


# ----- rules --------------------------------------------------------------------------------


class _Plan:
    """The union of some schedules, as periods per day type, in seconds (inclusive ends)."""

    def __init__(self, schedules: list[Schedule]) -> None:
        self.heads: dict[str, list[tuple[int, int]]] = {}
        self.tails: dict[str, list[tuple[int, int]]] = {}
        for sched in schedules:
            for p in sched.periods:
                end = LAST_SECOND if p.wraps else p.end * 60 - 1
                self.heads.setdefault(p.day, []).append((p.start * 60, end))
                if p.wraps and p.end > 0:
                    self.tails.setdefault(p.day, []).append((0, p.end * 60 - 1))

    def day(self, today: str, yesterday: str) -> list[tuple[int, int]]:
        """The open spans of a day of type ``today`` after a day of type ``yesterday``."""
        return _merged([*self.heads.get(today, []), *self.tails.get(yesterday, [])])


def _rule(
    name: str,
    schedules: list[Schedule] | None,
    holidays: tuple[Holiday, ...],
    today: date,
    limits: list[str],
) -> tuple[dict[str, Any], date | None]:
    """A rule body; None schedules: always open. Also the first day it could not hold."""
    body: dict[str, Any] = {"onset_point": 1, "expire_point": FAR}
    if schedules is None:
        for key in DAY_KEYS:
            body[key] = [{"start_time": _point(0), "end_time": _point(LAST_SECOND)}]
        body["special_days"] = []
        return body, None
    plan = _Plan(schedules)
    for index, key in enumerate(DAY_KEYS):
        spans = plan.day(DAYS[index], DAYS[index - 1])
        body[key] = _periods(spans, f"{name} on {DAYS[index]}", limits)
    specials: list[dict[str, Any]] = []
    overflow: date | None = None
    for when in _special_dates(holidays, today):
        spans = plan.day(_type(when, holidays), _type(when - timedelta(days=1), holidays))
        periods = _periods(spans, f"{name} on {when.isoformat()}", limits)
        if periods == body[DAY_KEYS[when.weekday()]]:
            continue
        if len(specials) == MAX_SPECIAL_DAYS:
            overflow = when
            break
        specials.append(
            {"year": when.year, "month": when.month, "day": when.day, "today_period": periods}
        )
    body["special_days"] = specials
    return body, overflow


def _periods(spans: list[tuple[int, int]], what: str, limits: list[str]) -> list[dict[str, Any]]:
    if len(spans) > MAX_PERIODS:
        limits.append(f"{what}: {len(spans)} periods, the terminal keeps 12 (the rest closed)")
        spans = spans[:MAX_PERIODS]
    return [{"start_time": _point(s), "end_time": _point(e)} for s, e in spans]


def _type(when: date, holidays: tuple[Holiday, ...]) -> str:
    return schedule.day_type(when, holidays)[0]


def _special_dates(holidays: tuple[Holiday, ...], today: date) -> list[date]:
    """Holidays from yesterday on, and the day after each (its wrapped periods), in order."""
    if not holidays:
        return []
    found: set[date] = set()
    for offset in range(-1, LOOKAHEAD_DAYS):
        when = today + timedelta(days=offset)
        if any(h.on(when) for h in holidays):
            found.update((when, when + timedelta(days=1)))
    return sorted(d for d in found if d >= today - timedelta(days=1))


# ----- the whole library --------------------------------------------------------------------


def terminal_user_id(member: Member, profile: Profile) -> tuple[str | None, str]:
    """The terminal's user id for a person (their first ``user_id``), or None and why not."""
    ids = sorted(v for k, v in member.credentials if k == "user_id") or [member.id]
    uid = ids[0]
    if len(uid.encode()) > MAX_ID_BYTES:
        return None, f"user id longer than {MAX_ID_BYTES} bytes"
    if profile.int_ids and not (uid.isdecimal() and 0 < int(uid) < MAX_OLD_USER_ID):
        return None, f"user id {uid!r} is not a number 1-{MAX_OLD_USER_ID - 1} (firmware 1.0/1.1)"
    return uid, ""


def _lockdown(site: Site, limits: list[str]) -> tuple[bool, str | None]:
    """Whether a lockdown is in force at the door, and the one group that may pass then."""
    view = policy.View(site_mode=site.site_mode, door_mode=site.door_mode)
    modes = policy.active_lockdowns(site.door, view)
    if not modes:
        return False, None
    groups = {m.override_group for m in modes}
    if len(groups) > 1:
        limits.append("lockdown: two lockdowns with different override groups: nobody passes")
        return True, None
    return True, groups.pop()


def derive(
    site: Site,
    now: float,
    tz: tzinfo,
    profile: Profile = Profile(),
    zone_kept: bool = True,
    urgency: Urgency | None = None,
) -> Desired:
    """The terminal's desired library at epoch second ``now`` (site zone ``tz``).

    ``zone_kept``: edged keeps the terminal's zone at the site's offset (``[terminal_clock]``
    ``ntp`` or ``manual`` with ``time_zone``); else its rules would open at other hours.
    ``urgency``: the worker thread deriving it steps aside for remote-auth answers between
    people (10,000 of them take a while).
    """
    out = Desired()
    if not zone_kept:
        out.limits.append(
            "the terminal's time zone is not kept at the site's ([terminal_clock] mode ntp or "
            "manual, time_zone = true): nobody passes offline"
        )
    door = site.door
    local = schedule.local_time(now, tz)
    offset = local.utcoffset() or timedelta(0)
    if offset % timedelta(hours=1):
        out.limits.append("the site's UTC offset is not a whole hour: nobody passes offline")
    if door.anti_passback > 0:
        out.limits.append("anti-passback: the terminal cannot count passes: nobody passes")
    if door.entry_modes is not None:
        out.limits.append("entry modes are restricted at the door: nobody passes offline")
    if door.min_score is not None or door.min_liveness is not None or door.mask_required:
        out.notes.append("score, liveness and mask: the terminal's own recognition settings")
    view = policy.View(
        tz=tz,
        site_mode=site.site_mode,
        door_mode=site.door_mode,
        schedules=site.schedules,
        holidays=site.holidays,
    )
    if not policy.active_lockdowns(door, view) and policy.free_access_scope(door, view, now):
        out.notes.append("free access: not expressed, the terminal keeps deciding by its rules")
    locked, override = _lockdown(site, out.limits)
    deny_all = bool(out.limits) or (locked and override is None)
    # edged group -> schedules at this door (None: always open)
    access: dict[str, list[str | None]] = {}
    for permission in site.permissions:
        if permission.door == door.name:
            access.setdefault(permission.group, []).append(permission.schedule)
    if locked:
        access = {g: [] for g in access}  # closed during the lockdown …
        if override is not None:
            access[override] = [None]  # … but for the override group, whatever its permissions
    rule_ids: set[str] = set()
    group_ids: set[str] = set()
    rules_by_body: dict[str, str] = {}
    terminal_group: dict[tuple[str, int], str] = {}
    expiry: date | None = None
    kinds = {
        (g, VISITOR if m.type == "visitor" else EMPLOYEE)
        for m in _valid(site, now, out, urgency)
        for g in m.groups
        if g in access
    }
    for group, kind in sorted(kinds):
        wanted = access[group]
        if deny_all or not wanted:
            body, overflow = _rule("never", [], (), local.date(), out.limits)
        elif None in wanted:
            body, overflow = _rule(ALWAYS, None, site.holidays, local.date(), out.limits)
        else:
            chosen = [
                site.schedules[s] for s in sorted({w for w in wanted if w}) if s in site.schedules
            ]
            body, overflow = _rule(
                f"group {group}", chosen, site.holidays, local.date(), out.limits
            )
        if overflow is not None:
            expiry = min(expiry or overflow, overflow)
            body["expire_point"] = _midnight_ms(overflow, tz) - 1
        key = digest(body)
        if key not in rules_by_body:
            if len(rules_by_body) == MAX_RULES:
                out.limits.append(f"more than {MAX_RULES} rules: group {group} left out")
                continue
            rid = _number(f"rule:{key}", rule_ids)
            rules_by_body[key] = rid
            out.rules[rid] = {"rule_id": rid, "name": f"edged {rid}", "schedule": body}
        if len(out.groups) == MAX_GROUPS:
            out.limits.append(f"more than {MAX_GROUPS} groups: group {group} left out")
            continue
        gid = _number(f"group:{group}:{kind}", group_ids)
        terminal_group[(group, kind)] = gid
        label = group if kind == EMPLOYEE else f"{group} (visitors)"
        out.groups[gid] = {
            "group_id": gid,
            "name": _clip(label),
            "type": kind,
            "rule_id": rules_by_body[key],
        }
    _users(site, now, profile, terminal_group, out, urgency)
    if expiry is not None:
        out.next_change = min(out.next_change or 1e18, _midnight_ms(expiry, tz) / 1000 - 60)
    if site.holidays:  # the special days slide with the date: derived again each midnight
        tomorrow = _midnight_ms(local.date() + timedelta(days=1), tz) / 1000
        out.next_change = min(out.next_change or tomorrow, tomorrow)
    return out


def _midnight_ms(when: date, tz: tzinfo) -> int:
    return int(datetime(when.year, when.month, when.day, tzinfo=tz).timestamp() * 1000)


def _valid(site: Site, now: float, out: Desired, urgency: Urgency | None) -> list[Member]:
    """People who may be on the terminal now; the next validity edge noted."""
    found = []
    for m in paced(site.people, urgency):
        for edge in (m.valid_from, m.valid_until):
            if edge is not None and edge > now:
                out.next_change = min(out.next_change or edge, edge)
        if m.blocked:
            continue
        if m.valid_from is not None and now < m.valid_from:
            continue
        if m.valid_until is not None and now >= m.valid_until:
            continue
        found.append(m)
    return found


def _users(
    site: Site,
    now: float,
    profile: Profile,
    groups: dict[tuple[str, int], str],
    out: Desired,
    urgency: Urgency | None,
) -> None:
    lists: dict[tuple[int, frozenset[str]], list[Any]] = {}  # people of one type in the same
    # groups share one list of terminal groups (the bodies are read, never changed)
    for m in paced(sorted(_valid(site, now, Desired(), urgency), key=lambda m: m.id), urgency):
        kind = VISITOR if m.type == "visitor" else EMPLOYEE
        mine = lists.get((kind, m.groups))
        if mine is None:
            ids = sorted(groups[(g, kind)] for g in m.groups if (g, kind) in groups)
            mine = lists[(kind, m.groups)] = [int(g) for g in ids] if profile.int_ids else ids
        if not mine:
            continue
        uid, why = terminal_user_id(m, profile)
        if uid is None:
            out.refused[m.id] = why
            continue
        if uid in out.users:
            out.refused[m.id] = f"user id {uid!r} is also person {out.person_of[uid]!r}'s"
            continue
        first = {
            k: sorted(v for c, v in m.credentials if c == k) for k in ("ic", "job", "id_number")
        }
        user: dict[str, Any] = {
            "user_id": int(uid) if profile.int_ids else uid,
            "name": _clip(m.name) or uid,
            "type": kind,
            "groups": mine,
            "ic_number": _clip((first["ic"] or [""])[0]),
            "job_number": _clip((first["job"] or [""])[0]),
            "id_number": _clip((first["id_number"] or [""])[0]),
            "is_admin": False,
            "remark": "edged",
        }
        if kind == VISITOR and m.valid_from is not None and m.valid_until is not None:
            user["guest_time_start"] = int(m.valid_from * 1000)
            user["guest_time_end"] = int(m.valid_until * 1000) - 1
        out.users[uid] = user
        out.person_of[uid] = m.id
        if m.face:
            out.faces[uid] = m.face
