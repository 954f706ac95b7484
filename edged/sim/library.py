"""The simulated terminal's own people library: users, groups, rules, and its local decision.

Pure data with the guide's limits (``zh/http/user|group|rule``, 1.3.0; ``en/`` for 1.0): at most
256 groups and 256 rules, 12 periods a day, 31 special days, ids of at most 128 bytes (integers
1..999999 for users on 1.0 and 1.1.0, whose ids and group lists are ints), a user's type fixed at
creation, a user only in groups of its own type, no reference to a missing rule or group, and no
rule or group deleted while something still refers to it. Blacklist is type 5 on 1.3.0 and 3
before (docs/terminal protocol, section 6). A refusal is ``LibraryError(code, msg)``: the web API
answers it as HTTP 200 with that ``code`` (400: a bad field, 404: no such id, 409: a limit or a
reference; 80202: a photo without a face, which the simulator sees as the bytes ``NOFACE`` in
it). ``decide`` is the terminal's local verdict at its own wall-clock time.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_GROUPS = 256
MAX_RULES = 256
MAX_PERIODS = 12
MAX_SPECIAL_DAYS = 31
MAX_ID_BYTES = 128
MAX_OLD_USER_ID = 999_999
MAX_AVATAR = 10 * 1024 * 1024 * 4 // 3 + 4  # 10 MB of JPEG, base64
MAX_FEATURE = 10 * 1024
MAX_POINT = 4_102_415_999_000  # 2099-12-31 23:59:59, ms
# Tuesday's key is the_period, Thursday's thur_period (as in the guide)
DAY_KEYS = (
    "mon_period",
    "the_period",
    "wed_period",
    "thur_period",
    "fri_period",
    "sat_period",
    "sun_period",
)
TEXT_FIELDS = ("ic_number", "id_number", "job_number", "pin")


class LibraryError(Exception):
    """The terminal refused a write: its business ``code`` and message."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass
class Library:
    """Users, groups and rules as one terminal keeps them (kept across reboots)."""

    blacklist_type: int = 5  # 3 before firmware 1.3.0
    int_ids: bool = False  # firmware 1.0/1.1.0: user ids and group lists are integers
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: int = 0  # every accepted create, update or delete (tests count them)

    # ----- ids ------------------------------------------------------------------------------

    def _id(self, raw: Any, what: str) -> str:
        if self.int_ids and what == "user_id":
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise LibraryError(400, f"{what} must be an integer on this firmware")
            if not 0 < raw < MAX_OLD_USER_ID:
                raise LibraryError(400, f"{what} must be 1..{MAX_OLD_USER_ID - 1}")
            return str(raw)
        if isinstance(raw, int) and not isinstance(raw, bool) and self.int_ids:
            return str(raw)
        if not isinstance(raw, str) or not raw:
            raise LibraryError(400, f"{what} is required (a string)")
        if len(raw.encode()) > MAX_ID_BYTES:
            raise LibraryError(400, f"{what} longer than {MAX_ID_BYTES} bytes")
        return raw

    def _name(self, body: dict[str, Any]) -> str:
        name = body.get("name")
        if not isinstance(name, str) or not 0 < len(name.encode()) <= 128:
            raise LibraryError(400, "name must be 1-128 bytes")
        return name

    def _type(self, body: dict[str, Any]) -> int:
        kind = body.get("type", 1)
        allowed = (1, 2, self.blacklist_type)
        if kind not in allowed:
            raise LibraryError(400, f"type must be one of {', '.join(map(str, allowed))}")
        return int(kind)

    # ----- rules ----------------------------------------------------------------------------

    def put_rule(self, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """Create or replace a rule (``POST /v1/rule``)."""
        rid = self._id(body.get("rule_id"), "rule_id")
        name = self._name(body)
        schedule = body.get("schedule")
        if not isinstance(schedule, dict):
            raise LibraryError(400, "schedule is required")
        for key in ("onset_point", "expire_point"):
            point = schedule.get(key)
            if not isinstance(point, int) or not 0 < point < MAX_POINT:
                raise LibraryError(400, f"schedule.{key} must be 1..{MAX_POINT - 1} (ms)")
        clean = {k: schedule[k] for k in ("onset_point", "expire_point")}
        for key in DAY_KEYS:
            clean[key] = _periods(schedule.get(key, []), key)
        specials = schedule.get("special_days", [])
        if not isinstance(specials, list) or len(specials) > MAX_SPECIAL_DAYS:
            raise LibraryError(409, f"special_days: at most {MAX_SPECIAL_DAYS}")
        clean["special_days"] = [_special(day) for day in specials]
        if rid not in self.rules and len(self.rules) >= MAX_RULES:
            raise LibraryError(409, f"at most {MAX_RULES} rules")
        return self._keep(
            self.rules, rid, {"rule_id": rid, "name": name, "schedule": clean}, now_ms
        )

    def delete_rule(self, rid: str) -> None:
        """Delete a rule no group uses (``DELETE /v1/rule/id/{id}``)."""
        if rid not in self.rules:
            raise LibraryError(404, f"no rule {rid}")
        users = [g for g, group in self.groups.items() if group.get("rule_id") == rid]
        if users:
            raise LibraryError(409, f"rule {rid} is used by group {users[0]}")
        del self.rules[rid]
        self.writes += 1

    # ----- groups ---------------------------------------------------------------------------

    def put_group(self, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """Create or replace a group (``POST /v1/group``)."""
        gid = self._id(body.get("group_id"), "group_id")
        name = self._name(body)
        kind = self._type(body)
        rule = body.get("rule_id") or ""
        if rule and str(rule) not in self.rules:
            raise LibraryError(409, f"rule {rule} does not exist")
        old = self.groups.get(gid)
        if old is not None and old["type"] != kind:
            members = [u for u, user in self.users.items() if gid in user["groups"]]
            if members:
                raise LibraryError(409, f"group {gid} has users of type {old['type']}")
        if old is None and len(self.groups) >= MAX_GROUPS:
            raise LibraryError(409, f"at most {MAX_GROUPS} groups")
        clean = {"group_id": gid, "name": name, "type": kind, "rule_id": str(rule)}
        return self._keep(self.groups, gid, clean, now_ms)

    def delete_group(self, gid: str) -> None:
        """Delete a group no user is in (``DELETE /v1/group/id/{id}``)."""
        if gid not in self.groups:
            raise LibraryError(404, f"no group {gid}")
        members = [u for u, user in self.users.items() if gid in user["groups"]]
        if members:
            raise LibraryError(409, f"group {gid} still has user {members[0]}")
        del self.groups[gid]
        self.writes += 1

    # ----- users ----------------------------------------------------------------------------

    def put_user(self, body: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """Create or replace a whole user (``POST /v1/user``, one item of ``POST /v2/user``)."""
        uid = self._id(body.get("user_id"), "user_id")
        name = self._name(body)
        kind = self._type(body)
        old = self.users.get(uid)
        if old is not None and old["type"] != kind:
            raise LibraryError(409, "type cannot change after creation: delete and re-create")
        groups = body.get("groups") or []
        if not isinstance(groups, list):
            raise LibraryError(400, "groups must be a list")
        names = [str(g) for g in groups]
        for gid in names:
            group = self.groups.get(gid)
            if group is None:
                raise LibraryError(409, f"group {gid} does not exist")
            if group["type"] != kind:
                raise LibraryError(409, f"group {gid} is of type {group['type']}, not {kind}")
        avatar, feature = body.get("avatar") or "", body.get("feature") or ""
        if not isinstance(avatar, str) or len(avatar) > MAX_AVATAR:
            raise LibraryError(400, "avatar must be base64 of at most 10 MB")
        if not isinstance(feature, str) or len(feature) > MAX_FEATURE:
            raise LibraryError(400, "feature: at most 10 KB")
        if avatar and not feature:
            _check_photo(avatar)
        clean: dict[str, Any] = {"user_id": uid, "name": name, "type": kind, "groups": names}
        for key in TEXT_FIELDS:
            value = body.get(key) or ""
            if not isinstance(value, str) or len(value.encode()) > 128:
                raise LibraryError(400, f"{key}: a string of at most 128 bytes")
            clean[key] = value
        for key in ("guest_time_start", "guest_time_end"):
            clean[key] = int(body.get(key) or 0)
        clean["avatar"], clean["feature"] = avatar, feature
        clean["remark"] = str(body.get("remark") or "")[:256]
        clean["is_admin"] = bool(body.get("is_admin", False))
        return self._keep(self.users, uid, clean, now_ms)

    def delete_user(self, uid: str) -> None:
        """Delete a user (``DELETE /v1/user/id/{id}``)."""
        if self.users.pop(uid, None) is None:
            raise LibraryError(404, f"no user {uid}")
        self.writes += 1

    def clear(self) -> None:
        """``GET /v2/datasync/clear``, or a factory reset: users, groups and rules gone."""
        self.users.clear()
        self.groups.clear()
        self.rules.clear()

    def _keep(
        self, table: dict[str, dict[str, Any]], key: str, item: dict[str, Any], now_ms: int
    ) -> dict[str, Any]:
        old = table.get(key)
        item["create_at"] = old["create_at"] if old else now_ms
        item["update_at"] = now_ms
        table[key] = item
        self.writes += 1
        return item

    # ----- reading --------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``GET /v2/datasync/info``: ids and ``update_at`` of everything (users' groups too)."""
        return {
            "groups": [{"id": k, "update_at": v["update_at"]} for k, v in self.groups.items()],
            "users": [
                {"id": k, "update_at": v["update_at"], "groups": list(v["groups"])}
                for k, v in self.users.items()
            ],
            "rules": [{"id": k, "update_at": v["update_at"]} for k, v in self.rules.items()],
        }

    def shown(self, user: dict[str, Any]) -> dict[str, Any]:
        """A user as the API lists it (ints on old firmware)."""
        if not self.int_ids:
            return dict(user)
        return {
            **user,
            "user_id": int(user["user_id"]),
            "groups": [int(g) if g.isdecimal() else g for g in user["groups"]],
        }

    # ----- the local decision ---------------------------------------------------------------

    def decide(self, user_id: str, local: datetime, now_ms: int) -> bool:
        """Whether the terminal lets ``user_id`` pass at its wall-clock time ``local``.

        Not in the library, blacklisted, outside a visitor's guest time, or in no group whose
        rule is open now: denied. A rule is open between its onset and expiry points, in one of
        the day's periods (start and end inclusive, to the second); a special day matching the
        date (0 = any year, month or day) replaces the weekday's periods.
        """
        user = self.users.get(user_id)
        if user is None or user["type"] == self.blacklist_type:
            return False
        start, end = user["guest_time_start"], user["guest_time_end"]
        if user["type"] == 2 and ((start and now_ms < start) or (end and now_ms > end)):
            return False
        for gid in user["groups"]:
            group = self.groups.get(gid)
            rule = self.rules.get(group["rule_id"]) if group and group["rule_id"] else None
            if rule is not None and _open(rule["schedule"], local, now_ms):
                return True
        return False


NO_FACE = b"NOFACE"  # a photo holding these bytes has no face in it, for the simulator


def _check_photo(avatar: str) -> None:
    """Refuse what a terminal refuses: not an image, or (marked) no face in it (80202)."""
    try:
        data = base64.b64decode(avatar, validate=True)
    except (binascii.Error, ValueError):
        raise LibraryError(400, "avatar is not base64") from None
    if not data.startswith((b"\xff\xd8", b"\x89PNG")):
        raise LibraryError(400, "avatar is not a JPG or PNG image")
    if NO_FACE in data:
        raise LibraryError(80202, "no face found in the photo")


def _periods(raw: Any, key: str) -> list[tuple[int, int]]:
    if not isinstance(raw, list):
        raise LibraryError(400, f"{key} must be a list")
    if len(raw) > MAX_PERIODS:
        raise LibraryError(409, f"{key}: at most {MAX_PERIODS} periods a day")
    return [(_seconds(p, "start_time", key), _seconds(p, "end_time", key)) for p in raw]


def _seconds(period: Any, key: str, where: str) -> int:
    point = period.get(key, {}) if isinstance(period, dict) else None
    if not isinstance(point, dict):
        raise LibraryError(400, f"{where}.{key} must be an object")
    hour, minute, sec = (point.get(k, 0) for k in ("hour", "min", "sec"))
    if not (isinstance(hour, int) and isinstance(minute, int) and isinstance(sec, int)) or not (
        0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= sec <= 59
    ):
        raise LibraryError(400, f"{where}.{key}: hour 0-23, min and sec 0-59")
    return hour * 3600 + minute * 60 + sec


def _special(day: Any) -> dict[str, Any]:
    if not isinstance(day, dict):
        raise LibraryError(400, "special_days: objects")
    year, month, mday = (day.get(k, 0) for k in ("year", "month", "day"))
    if not (isinstance(year, int) and isinstance(month, int) and isinstance(mday, int)) or not (
        0 <= year <= 2099 and 0 <= month <= 12 and 0 <= mday <= 31
    ):
        raise LibraryError(400, "special_days: year 0-2099, month 0-12, day 0-31")
    periods = _periods(day.get("today_period", []), "today_period")
    return {"year": year, "month": month, "day": mday, "today_period": periods}


def _open(schedule: dict[str, Any], local: datetime, now_ms: int) -> bool:
    if not schedule["onset_point"] <= now_ms <= schedule["expire_point"]:
        return False
    periods = schedule[DAY_KEYS[local.weekday()]]
    for day in schedule["special_days"]:
        if all(
            v in (0, actual)
            for v, actual in zip(
                (day["year"], day["month"], day["day"]),
                (local.year, local.month, local.day),
                strict=True,
            )
        ):
            periods = day["today_period"]
            break
    second = local.hour * 3600 + local.minute * 60 + local.second
    return any(start <= second <= end for start, end in periods)
