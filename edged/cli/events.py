"""``edged events``, ``edged why`` and ``edged snapshot``: the stored events, read-only."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from edged.cli import common
from edged.errors import NotFoundError, OutputError, UsageError

EVENT_COLUMNS = ("id", "received (UTC)", "terminal", "person", "what")
DEFAULT_EVENTS = 20  # a bare `edged events`: the newest page
FOLLOW_INTERVAL = 1.0  # seconds between two reads of the database while following


def _event_header() -> str:
    ident, received, where, who, what = (c.upper() for c in EVENT_COLUMNS)
    return f"{ident:>8} {received:<24} {where:<16} {who:<20} {what}"


def _event_line(event: dict[str, Any]) -> str:
    who = event.get("user_name") or event.get("person_id") or event.get("user_id") or "-"
    what = event["kind"]
    if event.get("decision"):
        reason = f" ({event['reason']})" if event.get("reason") else ""
        what = f"{what} {event['decision']}{reason}"
    elif event["kind"] == "alarm":
        code, status = common.text(event.get("alarm_code")), common.text(event.get("alarm_status"))
        what = f"alarm code={code} status={status}"
    if str(event.get("door_outcome") or "").startswith("refused"):
        what += f", door {event['door_outcome']}"  # granted, door refused: lockdown
    flags = " replayed" if event.get("replayed") else ""
    if event.get("duplicates"):
        flags += f" dup x{event['duplicates']}"
    where = event.get("terminal") or event["serial"]
    return f"{event['id']:>8} {event['received_at']:<24} {where:<16} {who:<20} {what}{flags}"


def since(text: str) -> float:
    """``--since``: epoch seconds or an ISO date or date-time (UTC unless it has an offset)."""
    from edged.admin.app import parse_since

    try:
        value = parse_since(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date-time (2026-11-28T08:00, UTC unless it has an offset) "
            "or epoch seconds"
        )
    return value


class _EventPrinter:
    """Prints events as text (a header first) or as JSON lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.printed = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(event), flush=True)
        else:
            if not self.printed:
                print(_event_header())
            print(_event_line(event), flush=True)
        self.printed += 1


def _first_events(conn: Any, query: Any, args: argparse.Namespace) -> tuple[list[Any], bool]:
    """The events asked for before any following, and whether more matched than shown."""
    from edged.store import readonly

    if args.tail:
        return list(readonly.events(conn, query, args.tail, newest_first=True)), False
    if args.limit:
        found = list(readonly.events(conn, query, args.limit + 1))
        return found[: args.limit], len(found) > args.limit
    found = readonly.recent(conn, query, DEFAULT_EVENTS + 1)
    return found[-DEFAULT_EVENTS:], len(found) > DEFAULT_EVENTS


def cmd_events(args: argparse.Namespace) -> int:
    """Print stored events from the database (read-only); --follow keeps printing new ones."""
    from edged.store import readonly

    if args.tail and args.follow:
        raise UsageError(
            "events: --tail prints newest first and --follow in arrival order: pick one"
        )
    query = readonly.EventQuery(
        args.since, args.terminal, args.person, args.decision, until=args.until
    )
    if args.format != "text":
        return _export(args, query)
    if args.output:
        raise UsageError("events: -o FILE is for the export: add --format csv or jsonl")
    cfg = common.load(args)
    conn = readonly.connect(cfg.storage.database_path)
    try:
        shown, more = _first_events(conn, query, args)
        newest = readonly.last_id(conn)
    finally:
        conn.close()
    show = _EventPrinter(args.json)
    for event in shown:
        show(event)
    if more:
        limit = args.limit or DEFAULT_EVENTS
        print(
            f"edged: more events match than the {limit} shown: --limit N, --tail N or --since",
            file=sys.stderr,
        )
    if not shown and not args.json and not args.follow:
        print("no events match", file=sys.stderr)
    if args.follow:
        _follow(cfg.storage.database_path, query, newest, show)
    return 0


def _export(args: argparse.Namespace, query: Any) -> int:
    """``--format csv|jsonl``: every matching event (or the first --limit), streamed."""
    from edged.store import export

    given = (("--tail", args.tail), ("--follow", args.follow), ("--json", args.json))
    clashes = [name for name, value in given if value]
    if clashes:
        raise UsageError(
            f"events: --format {args.format} exports everything: not with {clashes[0]}"
        )
    cfg = common.load(args)
    rows = export.events_from_file(cfg.storage.database_path, query)
    if args.limit:
        rows = itertools.islice(rows, args.limit)
    counted = [0]

    def counting(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for event in events:
            counted[0] += 1
            yield event

    to_file = bool(args.output and args.output != "-")
    with contextlib.ExitStack() as opened:
        stream: IO[str] = sys.stdout
        if to_file:
            try:
                stream = opened.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            except OSError as exc:
                raise OutputError(f"{args.output}: {exc.strerror or exc}") from None
        for chunk in export.lines(args.format, counting(rows)):
            stream.write(chunk)
        stream.flush()
    if to_file:
        print(f"{args.output}: {counted[0]} events")
    return 0


def _follow(path: Path, query: Any, after: int, show: Callable[[dict[str, Any]], None]) -> None:
    """Print every matching event stored after id ``after``, until interrupted.

    The database is opened anew for every read, so following goes on across a restart of the
    daemon (or a stop: nothing new is printed until it runs again).
    """
    from edged.errors import StoreError
    from edged.store import readonly

    trouble = ""
    while True:
        try:
            conn = readonly.connect(path)
            try:
                page = list(readonly.events(conn, query, 1000, after=after))
            finally:
                conn.close()
        except StoreError as exc:
            if str(exc) != trouble:
                trouble = str(exc)
                print(f"edged: {trouble}; trying again", file=sys.stderr, flush=True)
            time.sleep(FOLLOW_INTERVAL)
            continue
        if trouble:
            trouble = ""
            print("edged: reading the database again", file=sys.stderr, flush=True)
        for event in page:
            show(event)
            after = event["id"]
        if len(page) < 1000:
            time.sleep(FOLLOW_INTERVAL)


def cmd_why(args: argparse.Namespace) -> int:
    """Explain how a stored decision was reached."""
    from edged.decide import explain
    from edged.store import readonly

    conn = readonly.connect(common.load(args).storage.database_path)
    try:
        lines = explain.lines(conn, args.event_id)
    finally:
        conn.close()
    print("\n".join(lines))
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Write a stored event's snapshot (a JPEG) to a file or to standard output."""
    from edged.store import queries, readonly, snapshots

    cfg = common.load(args)
    conn = readonly.connect(cfg.storage.database_path)
    try:
        row = queries.snapshot_place(conn, args.event_id)
    finally:
        conn.close()
    if row is None:
        raise NotFoundError(f"no event {args.event_id}")
    if row["image_path"] is None:
        raise NotFoundError(f"event {args.event_id} has no snapshot")
    data = snapshots.read(
        cfg.storage.images_path, row["image_path"], row["image_offset"], row["image_bytes"]
    )
    if data is None:
        raise NotFoundError(
            f"the snapshot of event {args.event_id} is gone (pruned, or lost in a power cut)"
        )
    if args.output and args.output != "-":
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            raise OutputError(f"{args.output}: {exc.strerror or exc}") from None
        print(f"{args.output}: {len(data)} bytes")
    elif sys.stdout.isatty():
        raise UsageError("not writing a JPEG to a terminal: use -o FILE or a redirection")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0
