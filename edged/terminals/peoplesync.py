"""People on the terminals as desired state: each managed terminal holds what edged says.

One task per managed terminal (``PeopleSyncs``, with ``[people_sync] enabled``). A sync reads the
door's people, permissions and schedules (edged/access/doorpeople.py), maps them to the
terminal's users, groups and rules (edged/terminals/peoplemap.py), reads what the terminal holds
(``/v2/datasync/info`` from firmware 1.2.1 on, the paged lists before), and writes only the
difference: rules, groups, users first (created or replaced), then deletes in reverse order
(users, groups, rules), in batches (``/v2/...`` where the firmware has it, one call an item
before). Nothing is cleared first, so nobody who may pass is ever missing on the way. A refusal
of one item (a photo without a face, an id too long, a type the terminal will not change) is
recorded for that person and terminal (edged/access/terminalstate.py) and the rest goes on; a
type change is done as delete and re-create.

A sync runs at start-up, after every reconcile of the terminal (a reboot or factory reset is
noticed there), whenever the access model's change counter moves (polled every
``people_sync.poll_interval`` seconds: an import by another process is seen too), when the desired
state changes by itself (someone's validity starts or ends, a new day of special days), and every
``people_sync.interval`` seconds. Faces are read from their files one batch at a time.

A sync runs beside the remote-auth answers somebody waits for (edged/store/urgency.py): the model
read, the desired library, the plan, the datasync info and each batch's encoding are a worker
thread's and step aside between items while an answer is being given; each batch waits for the
answers being given; while the doors are busy the sync rests after each batch as long as its CPU
time (at most ``MAX_REST``). What was written is recorded ``RECORDED`` items to a transaction
(and at the end, however the writing ended): each commit is an fsync a live record could wait
behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from edged.access import doorpeople, terminalstate
from edged.access.faces import FaceStore
from edged.access.terminalstate import Item
from edged.aio import within
from edged.clock import SYSTEM, Clock
from edged.config import Config, TerminalConfig
from edged.errors import TerminalError
from edged.hooks import Hooks
from edged.store import events as store
from edged.store.urgency import Urgency, paced
from edged.terminals import client as terminals
from edged.terminals import peoplemap
from edged.terminals.peoplemap import Desired, Profile

log = logging.getLogger(__name__)

KINDS = ("rule", "group", "user")  # the order of writes; deletes go the other way
ID_KEYS = {"rule": "rule_id", "group": "group_id", "user": "user_id"}
PAGE = 100
RECORDED = 500  # items whose bookkeeping one transaction keeps (one commit, one fsync)
MAX_REST = 1.0  # the longest rest after a batch while the doors are busy
REFUSED = re.compile(r": HTTP 200, code (\d+)(?:: (.*))?$")
CLOSE_TIMEOUT = 2.0  # the longest the task's end waits for the terminal's connections to close


class Source(Protocol):
    """Where the sync reads and records: the state database (the daemon's ``Store``, or a
    command's own connection)."""

    @property
    def path(self) -> Path:
        """The database file (the sync's worker threads open their own connections)."""

    @property
    def reader(self) -> sqlite3.Connection:
        """A connection for quick reads on the caller's thread."""

    @property
    def urgency(self) -> Urgency:
        """The remote-auth answers being given: the sync's work steps aside for them."""


@dataclass(slots=True)
class Change:
    """One write the sync makes (or, in a dry run, would make)."""

    sign: str  # + added, ~ replaced, - removed
    kind: str
    item_id: str
    person_id: str | None = None
    body: dict[str, Any] | None = None  # what is sent; let go once written and recorded
    sent: str | None = None
    recreate: bool = False  # a type change: delete first

    def text(self) -> str:
        """``+ user 17 (person e-17)``."""
        who = f" (person {self.person_id})" if self.person_id else ""
        return f"{self.sign} {self.kind} {self.item_id}{who}"


@dataclass
class Report:
    """What one sync found and did."""

    changes: list[Change] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # terminal user id -> refusal
    refused: dict[str, str] = field(default_factory=dict)  # person id -> why not mapped
    limits: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    desired: int = 0
    written: int = 0
    next_change: float | None = None
    done: bool = False  # the changes were written (else: what a dry run would write)

    @property
    def in_step(self) -> bool:
        """Nothing (more) to write and nothing refused."""
        return not self.errors and (self.done or not self.changes)


@dataclass(slots=True)
class Held:
    """What the terminal holds of one item: its update time and what it listed (the paged
    lists of firmware before 1.2.1; None from the datasync info)."""

    update_at: int | None = None
    listed: dict[str, Any] | None = None


def profile_of(version: tuple[int, ...] | None) -> tuple[Profile, bool]:
    """The mapping profile and whether ``/v2`` (datasync, batches) is there, by firmware."""
    v2 = version is not None and version >= (1, 2, 1)
    blacklist = 5 if version is not None and version >= (1, 3) else 3
    return Profile(int_ids=not v2, blacklist_type=blacklist), v2


def sent_digest(kind: str, body: dict[str, Any], face: str | None) -> str:
    """What is compared with what was written last: the body, and the face's digest."""
    return peoplemap.digest({"kind": kind, "body": body, "face": face})


def _listed_differs(kind: str, body: dict[str, Any], listed: dict[str, Any] | None) -> bool:
    """Whether a listed item (older firmware, no datasync) differs from the body in what shows."""
    if listed is None:
        return False
    keys = {"user": ("name", "type", "groups"), "group": ("name", "type", "rule_id")}.get(
        kind,
        ("name",),  # a rule's id is derived from its content
    )
    return any(_same(listed.get(k)) != _same(body.get(k)) for k in keys if k in body)


def _same(value: Any) -> Any:
    if isinstance(value, list):
        return sorted(str(v) for v in value)
    return "" if value is None else str(value)


def plan(
    desired: Desired,
    held: dict[str, dict[str, Held]],
    recorded: dict[tuple[str, str], Item],
    retry_errors: bool = False,
    urgency: Urgency | None = None,
) -> list[Change]:
    """The writes that bring the terminal to ``desired``: puts in order, then deletes reversed.

    An item the terminal refused is not sent again while it is the same (unless
    ``retry_errors``): a photo without a face stays refused until a new photo comes.
    ``urgency``: the worker thread planning steps aside for remote-auth answers between items.
    """
    wanted = desired.of_kind()
    puts: list[Change] = []
    for kind in KINDS:
        for key, body in paced(sorted(wanted[kind].items()), urgency):
            face = desired.faces.get(key) if kind == "user" else None
            sent = sent_digest(kind, body, face)
            on = held[kind].get(key)
            before = recorded.get((kind, key))
            person = desired.person_of.get(key) if kind == "user" else None
            change = Change("~", kind, key, person, body, sent)
            refused = before is not None and before.state == "error" and before.sent == sent
            if refused and not retry_errors:
                continue
            if on is None:
                change.sign = "+"
            elif before is None or before.sent != sent:
                pass
            elif before.update_at is not None and on.update_at not in (None, before.update_at):
                pass  # changed on the terminal since edged wrote it
            elif _listed_differs(kind, body, on.listed):
                pass
            else:
                continue
            listed_type = (on.listed or {}).get("type") if on is not None else None
            change.recreate = kind == "user" and listed_type not in (None, body.get("type"))
            puts.append(change)
    deletes = [
        Change("-", kind, key)
        for kind in reversed(KINDS)
        for key in paced(sorted(held[kind]), urgency)
        if key not in wanted[kind]
    ]
    return puts + deletes


def _report(
    desired: Desired,
    held: dict[str, dict[str, Held]],
    recorded: dict[tuple[str, str], Item],
    retry_errors: bool,
    urgency: Urgency | None = None,
) -> Report:
    """The sync's plan and what stays refused (a worker thread's: it steps aside)."""
    report = Report(
        changes=plan(desired, held, recorded, retry_errors, urgency),
        refused=dict(desired.refused),
        limits=list(desired.limits),
        notes=list(desired.notes),
        desired=len(desired.users),
        next_change=desired.next_change,
    )
    planned = {c.item_id for c in report.changes if c.kind == "user"}
    report.errors = {  # refused before, the same again: still refused
        key: item.error or "refused"
        for (kind, key), item in paced(recorded.items(), urgency)
        if kind == "user" and item.state == "error" and key in desired.users and key not in planned
    }
    return report


def _stale(
    desired: Desired,
    held: dict[str, dict[str, Held]],
    recorded: dict[tuple[str, str], Item],
    urgency: Urgency | None = None,
) -> list[tuple[str, str]]:
    """Items recorded (refused once) that are neither wanted nor held: nothing to remember."""
    wanted = desired.of_kind()
    return [
        (kind, key)
        for kind, key in paced(recorded, urgency)
        if key not in wanted.get(kind, {}) and key not in held.get(kind, {})
    ]


def _held_of(data: Any, urgency: Urgency | None = None) -> dict[str, dict[str, Held]]:
    """What the datasync info says the terminal holds, by kind and id."""
    data = data if isinstance(data, dict) else {}
    return {
        kind: {
            str(i.get("id")): Held(i.get("update_at"))
            for i in paced(data.get(f"{kind}s") or [], urgency)
            if isinstance(i, dict)
        }
        for kind in KINDS
    }


class PeopleSync:
    """One terminal's people, groups and rules, kept as edged's model says."""

    def __init__(
        self,
        cfg: Config,
        terminal: TerminalConfig,
        store_: Source,
        clock: Clock = SYSTEM,
        client: terminals.TerminalClient | None = None,
    ) -> None:
        self.cfg = cfg
        self.terminal = terminal
        self.store = store_
        self.clock = clock
        self.client = client
        self.door = terminal.door or terminal.name
        self.tz = ZoneInfo(cfg.site.timezone)
        self.faces = FaceStore(cfg.storage.faces_path)
        self.wake = asyncio.Event()
        self.last: Report | None = None
        self.progress = ""
        self.total = 0
        self.failing = False
        self.cpu: Callable[[], float] = time.process_time  # what a batch cost (all threads)
        self._unrecorded: dict[tuple[str, str], Item | None] = {}  # written, removed (None)

    # ----- reading --------------------------------------------------------------------------

    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        """A connection of the calling worker thread's own, closed at the end of ``with``."""
        return contextlib.closing(store.connect(self.store.path))

    async def _desired(self, profile: Profile, now: float) -> Desired:
        def work() -> Desired:
            urgency = self.store.urgency
            with self._connect() as conn:
                site = doorpeople.load(conn, self.door, urgency)
            clock = self.cfg.terminal_clock
            kept = clock.mode in ("ntp", "manual") and clock.time_zone
            return peoplemap.derive(site, now, self.tz, profile, zone_kept=kept, urgency=urgency)

        return await asyncio.to_thread(work)

    async def _held(self, client: terminals.TerminalClient, v2: bool) -> dict[str, dict[str, Held]]:
        if v2:
            data = await client.call("GET", "/v2/datasync/info", large=True)
            return await asyncio.to_thread(_held_of, data, self.store.urgency)
        out: dict[str, dict[str, Held]] = {}
        for kind in KINDS:
            out[kind] = {}
            offset = 0
            while True:
                page = await client.call(
                    "GET", f"/v1/{kind}/offset/{offset}/limit/{PAGE}", large=True
                )
                items = (page or {}).get("items") or []
                for item in items:
                    if isinstance(item, dict) and ID_KEYS[kind] in item:
                        item.pop("avatar", None)
                        out[kind][str(item[ID_KEYS[kind]])] = Held(item.get("update_at"), item)
                offset += len(items)
                total = int((page or {}).get("total") or 0)
                if not items or offset >= total or offset > 100_000:
                    break
        return out

    # ----- one sync -------------------------------------------------------------------------

    async def _client(self) -> terminals.TerminalClient:
        if self.client is None:
            self.client = terminals.client_for(
                self.cfg, self.terminal, self.store.reader, self.store.urgency
            )
        return self.client

    async def sync_once(self, dry_run: bool = False, retry_errors: bool = False) -> Report:
        """Compare and (unless ``dry_run``) write the difference; a transport error raises.

        ``retry_errors``: send again what the terminal refused before, unchanged or not.
        """
        client = await self._client()
        await client.device_info()
        profile, v2 = profile_of(client.version)
        now = self.clock.time()
        desired = await self._desired(profile, now)
        held = await self._held(client, v2)
        recorded = await asyncio.to_thread(self._recorded)
        urgency = self.store.urgency
        report = await asyncio.to_thread(
            _report, desired, held, recorded, retry_errors, urgency
        )  # 10,000 digests: a worker thread's, beside the live answers
        if dry_run:
            return report
        await self._write(client, v2, desired, report)
        stale = await asyncio.to_thread(_stale, desired, held, recorded, urgency)
        del desired, held, recorded  # the library is written: not held while the
        # terminal's update times are read and recorded
        if stale:
            await asyncio.to_thread(self._record, [], stale)
        if v2 and report.written:
            await self._note_update_times(client)
        report.done = True
        await asyncio.to_thread(self._save_summary, report, now)
        self.last = report
        return report

    def _recorded(self) -> dict[tuple[str, str], Item]:
        with self._connect() as conn:
            return terminalstate.items(conn, self.terminal.serial)

    async def _write(
        self, client: terminals.TerminalClient, v2: bool, desired: Desired, report: Report
    ) -> None:
        batch = max(1, self.cfg.people_sync.batch_size)
        budget = self.cfg.people_sync.batch_bytes
        changes = report.changes
        total = len(changes)
        self.total = total
        done = 0
        recreate = [c for c in changes if c.recreate]
        try:
            if recreate:
                await self._delete(
                    client, v2, [Change("-", "user", c.item_id) for c in recreate], report
                )
            for kind in KINDS:
                puts = [c for c in changes if c.sign != "-" and c.kind == kind]
                for group in _batches(puts, batch, budget, self._face_cost(desired)):  # lazily
                    done += len(group)
                    self._progress(done, total)
                    started = self.cpu()
                    await self._put(client, v2, group, desired, report)
                    await self._rest(started)
            for kind in reversed(KINDS):
                gone = [c for c in changes if c.sign == "-" and c.kind == kind]
                for start in range(0, len(gone), batch * 5):
                    done += len(gone[start : start + batch * 5])
                    self._progress(done, total)
                    started = self.cpu()
                    await self._delete(client, v2, gone[start : start + batch * 5], report)
                    await self._rest(started)
        finally:  # what was written is recorded, even when a batch failed
            await self._flush()
        self.progress = ""

    async def _rest(self, started: float) -> None:
        """After a batch, while the doors are busy: rest as long as the CPU time it cost since
        ``started`` (the sync takes half the CPU, a live answer finds a core free)."""
        rest = self.store.urgency.rest(self.cpu() - started)
        if rest:
            await self.clock.sleep(min(rest, MAX_REST))

    def _progress(self, done: int, total: int) -> None:
        self.progress = f"{done}/{total}"
        log.debug("terminal %s: people sync %s writes", self.terminal.name, self.progress)

    async def _put(
        self,
        client: terminals.TerminalClient,
        v2: bool,
        group: list[Change],
        desired: Desired,
        report: Report,
    ) -> None:
        kind = group[0].kind
        await self.store.urgency.behind()  # a remote-auth answer first (edged/store/urgency.py)
        errors = await self._send_puts(client, v2, kind, group, desired)
        again = [c for c in group if "type" in errors.get(c.item_id, "") and not c.recreate]
        if again:  # a type the terminal will not change: delete and re-create those
            await self._delete(client, v2, [Change("-", kind, c.item_id) for c in again], report)
            for key in [c.item_id for c in again]:
                errors.pop(key, None)
            errors.update(await self._send_puts(client, v2, kind, again, desired))
        rows = []
        for change in group:
            error = errors.get(change.item_id)
            if error is not None:
                report.errors[change.item_id] = error
                log.debug(
                    "terminal %s: %s %s refused: %s",
                    self.terminal.name,
                    kind,
                    change.item_id,
                    error,
                )
            else:
                report.written += 1
            rows.append(
                Item(
                    kind,
                    change.item_id,
                    change.person_id,
                    change.sent,
                    None,
                    "error" if error else "in_step",
                    error,
                )
            )
        await self._note(rows, [])
        for change in group:
            change.body = None  # written (recorded soon): the report keeps what, not the body

    def _face_cost(self, desired: Desired) -> Callable[[Change], int]:
        """The bytes of base64 a change's face adds to a batch (its file's size, by a stat)."""

        def cost(change: Change) -> int:
            face = desired.faces.get(change.item_id) if change.kind == "user" else None
            size = self.faces.size(face) if face else None
            return (size or 0) * 4 // 3

        return cost

    def _avatar(self, face: str | None) -> str:
        if face is None:
            return ""
        try:
            return base64.b64encode(self.faces.read(face)).decode("ascii")
        except OSError:
            return ""  # the file is gone: no face (people show says MISSING)

    def _encoded(self, kind: str, changes: list[Change], desired: Desired, v2: bool) -> bytes:
        """The request body of some puts as JSON (a worker thread's: the photos are read, put in
        base64 and encoded here, never on the event loop): one ``/v2`` batch, or one item.

        Each item is encoded on its own, stepping aside for a remote-auth answer before it: a
        batch's 0.5 MB encoded in one call would hold the interpreter lock throughout.
        """
        bodies = []
        for change in paced(changes, self.store.urgency, every=1):
            assert change.body is not None
            body = dict(change.body)
            if kind == "user":
                body["avatar"] = self._avatar(desired.faces.get(change.item_id))
            bodies.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        if not v2:
            return bodies[0]
        return b'{"' + f"{kind}_list".encode() + b'":[' + b",".join(bodies) + b"]}"

    async def _send_puts(
        self,
        client: terminals.TerminalClient,
        v2: bool,
        kind: str,
        changes: list[Change],
        desired: Desired,
    ) -> dict[str, str]:
        """Write the changes' bodies; the refused ones by id, with the terminal's code and
        message."""
        if not changes:
            return {}
        if v2:
            payload = await asyncio.to_thread(self._encoded, kind, changes, desired, True)
            data = await client.call("POST", f"/v2/{kind}", payload)
            return _batch_errors(data)
        errors = {}
        for change in changes:
            assert change.body is not None
            one = await asyncio.to_thread(self._encoded, kind, [change], desired, False)
            try:
                await client.call("POST", f"/v1/{kind}", one)
            except TerminalError as exc:
                refused = _refusal(exc)
                if refused is None:
                    raise
                errors[str(change.body[ID_KEYS[kind]])] = refused
        return errors

    async def _delete(
        self, client: terminals.TerminalClient, v2: bool, gone: list[Change], report: Report
    ) -> None:
        if not gone:
            return
        kind = gone[0].kind
        ids = [c.item_id for c in gone]
        errors: dict[str, str] = {}
        if v2:
            data = await client.call("DELETE", f"/v2/{kind}", {"ids": ids})
            errors = _batch_errors(data)
        else:
            for key in ids:
                try:
                    await client.call("DELETE", f"/v1/{kind}/id/{key}")
                except TerminalError as exc:
                    refused = _refusal(exc)
                    if refused is None:
                        raise
                    errors[key] = refused
        errors = {k: v for k, v in errors.items() if not v.startswith("404")}  # already gone
        for key, error in errors.items():
            log.debug("terminal %s: delete %s %s refused: %s", self.terminal.name, kind, key, error)
        report.written += len(ids) - len(errors)
        gone_ids = [(kind, k) for k in ids if k not in errors]
        await self._note([], gone_ids)

    async def _note(self, rows: list[Item], removed: list[tuple[str, str]]) -> None:
        """Keep a batch's bookkeeping; recorded ``RECORDED`` items to a transaction, since each
        commit is an fsync a live record's commit could wait behind. An item removed and then
        written again (a type change) is recorded as written: the last word counts."""
        for kind, key in removed:
            self._unrecorded[(kind, key)] = None
        for row in rows:
            self._unrecorded[(row.kind, row.item_id)] = row
        if len(self._unrecorded) >= RECORDED:
            await self._flush()

    async def _flush(self) -> None:
        """Record what was written and removed since the last flush, in one transaction."""
        if not self._unrecorded:
            return
        pending, self._unrecorded = self._unrecorded, {}
        rows = [item for item in pending.values() if item is not None]
        removed = [key for key, item in pending.items() if item is None]
        await asyncio.to_thread(self._record, rows, removed, self.progress)

    def _record(
        self, rows: list[Item], removed: list[tuple[str, str]], progress: str | None = None
    ) -> None:
        with self._connect() as conn:
            serial = self.terminal.serial
            terminalstate.record(conn, serial, rows, removed, self.clock.time(), progress)

    async def _note_update_times(self, client: terminals.TerminalClient) -> None:
        """Record the terminal's ``update_at`` of what it holds (compared at the next sync), in
        the database row by row: nothing recorded is read into memory for it."""
        held = await self._held(client, True)
        times = [
            (kind, key, on.update_at) for kind, items in held.items() for key, on in items.items()
        ]
        del held

        def work() -> None:
            with self._connect() as conn:
                serial, now = self.terminal.serial, self.clock.time()
                terminalstate.note_update_times(conn, serial, times, now)

        await asyncio.to_thread(work)

    def _save_summary(self, report: Report, now: float) -> None:
        with self._connect() as conn:
            terminalstate.save_summary(
                conn,
                self.terminal.serial,
                {
                    "synced_at": now,
                    "checked_at": now,
                    "desired": report.desired,
                    "in_step": report.desired - len(report.errors),
                    "errors": len(report.errors),
                    "written": report.written,
                    "progress": "",
                    "last_error": None,
                    "limits": report.limits,
                },
            )

    # ----- the task -------------------------------------------------------------------------

    def trigger(self) -> None:
        """Sync soon (the terminal was reconciled, or an operator asked)."""
        self.wake.set()

    async def run(self) -> None:
        """Sync, then wait for a change, a wake-up, the next edge or the interval; forever."""
        ps = self.cfg.people_sync
        seen = -1
        delay = ps.retry_initial
        try:
            while True:
                self.wake.clear()
                seen = doorpeople.version(self.store.reader)
                next_change = await self._sync_logged()
                if self.failing:
                    wait = delay
                    delay = min(delay * 2, ps.retry_max)
                else:
                    delay = ps.retry_initial
                    wait = ps.interval
                    if next_change is not None:
                        wait = max(0.0, min(wait, next_change - self.clock.time()))
                await self._wait(wait, seen)
        finally:
            await self._close()

    async def _close(self) -> None:
        """Close the client's connections, at most ``CLOSE_TIMEOUT`` seconds: a connection
        that never finishes closing must not hold the daemon's stop."""
        if self.client is None:
            return
        try:
            await within(self.client.aclose(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.debug("terminal %s: the client did not close in time", self.terminal.name)

    async def _sync_logged(self) -> float | None:
        try:
            report = await self.sync_once()
        except (TerminalError, OSError) as exc:
            if not self.failing:
                log.warning("terminal %s: people sync failed, retried: %s", self.terminal.name, exc)
            else:
                log.debug("terminal %s: people sync failed again: %s", self.terminal.name, exc)
            self.failing = True
            return None
        if self.failing:
            log.info("terminal %s: people sync works again", self.terminal.name)
        self.failing = False
        if report.written:
            log.info(
                "terminal %s: people in step: %d written, %d people, %d refused",
                self.terminal.name,
                report.written,
                report.desired,
                len(report.errors),
            )
        return report.next_change

    async def _wait(self, seconds: float, seen: int) -> None:
        """Until woken, the access model changes, or ``seconds`` pass."""
        poll = self.cfg.people_sync.poll_interval
        deadline = self.clock.monotonic() + seconds
        while True:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return
            if await self.clock.wait(self.wake, min(poll, left)):
                return
            if doorpeople.version(self.store.reader) != seen:
                return

    def report(self) -> dict[str, Any]:
        """What ``terminals show`` and the admin API say of this terminal's people."""
        out = terminalstate.summary(self.store.reader, self.terminal.serial) or {}
        return {**out, "progress": self.progress, "failing": self.failing}


def _batches(
    changes: list[Change], size: int, budget: int, cost_of: Callable[[Change], int]
) -> Iterator[list[Change]]:
    """Changes in groups of at most ``size`` items and about ``budget`` bytes of faces, one
    group at a time (a face's cost is a ``stat`` of its file: made as its batch comes)."""
    current: list[Change] = []
    used = 0
    for change in changes:
        cost = cost_of(change)
        if current and (len(current) >= size or used + cost > budget):
            yield current
            current, used = [], 0
        current.append(change)
        used += cost
    if current:
        yield current


def _batch_errors(data: Any) -> dict[str, str]:
    errors = (data or {}).get("errors") if isinstance(data, dict) else None
    out = {}
    for item in errors or []:
        if isinstance(item, dict):
            out[str(item.get("id"))] = f"{item.get('code')}: {item.get('msg') or ''}".rstrip(": ")
    return out


def _refusal(exc: TerminalError) -> str | None:
    """The terminal's business refusal (``code: msg``) of one call, None for a transport error."""
    found = REFUSED.search(str(exc))
    if found is None:
        return None
    return f"{found.group(1)}: {found.group(2) or ''}".rstrip(": ")


class PeopleSyncs:
    """Every managed terminal's people sync (``[people_sync] enabled``)."""

    def __init__(self, cfg: Config, store_: Source, clock: Clock = SYSTEM) -> None:
        self.items = {
            t.name: PeopleSync(cfg, t, store_, clock)
            for t in cfg.terminals
            if t.host and cfg.people_sync.enabled
        }

    def hooks(self) -> Hooks:
        """The daemon's service running the terminals' syncs."""
        return Hooks(services=(self.run,) if self.items else ())

    def trigger(self, name: str) -> None:
        """Sync terminal ``name`` soon (the reconciler's hook after a reconcile)."""
        sync = self.items.get(name)
        if sync is not None:
            sync.trigger()

    async def run(self) -> None:
        """Run every terminal's sync until cancelled (a daemon service)."""
        tasks = [asyncio.create_task(s.run(), name=f"people-{n}") for n, s in self.items.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def reports(self) -> dict[str, dict[str, Any]]:
        """Each terminal's people report, by serial."""
        return {s.terminal.serial: s.report() for s in self.items.values()}
