"""Signed commands on ``<prefix>/commands``: checked here, before anything moves (docs/mqtt.md).

A command message is a JSON object ``{"body": "<the command as a JSON text>", "sig": "<hex>"}``:
``sig`` is HMAC-SHA256 over the UTF-8 bytes of ``body`` with the gateway's secret
(``mqtt.command_secret_file``). Signing the text as sent leaves nothing to canonicalise. The body
holds ``action`` (``open``, ``hold``, ``release``, ``lock``, ``lockdown``, ``free_access``),
``door`` (the door actions; a door scope for ``free_access``), ``on`` (the modes), ``ts`` (epoch
seconds, within ``WINDOW`` of the gateway's clock), ``nonce`` (8-64 letters, digits, ``-``,
``_``; never accepted twice) and optionally ``id`` (echoed in the reply) and ``by`` (who, for
the audit). The nonce check, which writes, comes last: the caller does it after :func:`verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

WINDOW = 30.0  # seconds a command's timestamp may be from the gateway's clock, either way
MAX_BYTES = 4096
DOOR_ACTIONS = ("open", "hold", "release", "lock")
MODE_ACTIONS = ("lockdown", "free_access")
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
_TEXT = re.compile(r"[\w@.:-]{1,64}")


class CommandError(Exception):
    """A refused command; ``reason`` is a short word for the reply and the counters."""

    def __init__(self, reason: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.request_id = request_id


@dataclass(frozen=True)
class Command:
    """A verified command."""

    action: str
    door: str | None
    on: bool | None
    nonce: str
    ts: float
    request_id: str | None
    by: str


def sign(secret: bytes, body: str) -> str:
    """The signature of a command body (what a sender computes)."""
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()


def message(secret: bytes, body: dict[str, Any]) -> bytes:
    """A whole command message for ``body`` (tests, and a sender written in Python)."""
    text = json.dumps(body, separators=(",", ":"))
    return json.dumps({"body": text, "sig": sign(secret, text)}).encode()


def verify(
    payload: bytes, secret: bytes, now: float, doors: Collection[str], scopes: Collection[str]
) -> Command:
    """The command in ``payload``; CommandError naming why it is refused.

    ``doors`` are the doors edged drives (the door actions), ``scopes`` every door a mode may
    name (``access.model.door_names``).
    """
    if len(payload) > MAX_BYTES:
        raise CommandError("malformed", f"larger than {MAX_BYTES} bytes")
    try:
        outer = json.loads(payload)
    except (ValueError, RecursionError):
        raise CommandError("malformed", "not JSON") from None
    if not isinstance(outer, dict) or not isinstance(outer.get("body"), str):
        raise CommandError("unsigned", 'expected {"body": "<command JSON>", "sig": "<hex>"}')
    sig = outer.get("sig")
    if not isinstance(sig, str) or not sig:
        raise CommandError("unsigned", "no signature")
    body_text: str = outer["body"]
    expected = sign(secret, body_text)
    if not hmac.compare_digest(expected, sig.strip().lower()):
        raise CommandError("bad-signature", "the signature does not match")
    try:
        body = json.loads(body_text)
    except (ValueError, RecursionError):
        raise CommandError("malformed", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise CommandError("malformed", "the body is not a JSON object")
    rid = body.get("id")
    request_id = (
        str(rid)[:64] if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None
    )
    ts = body.get("ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts != ts:
        raise CommandError("malformed", "ts: epoch seconds are required", request_id)
    if abs(now - float(ts)) > WINDOW:
        raise CommandError(
            "stale", f"ts is more than {WINDOW:.0f} s from the gateway's clock", request_id
        )
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise CommandError("malformed", "nonce: 8-64 letters, digits, '-' or '_'", request_id)
    by = body.get("by", "")
    if not isinstance(by, str) or (by and not _TEXT.fullmatch(by)):
        raise CommandError(
            "malformed", "by: up to 64 letters, digits, '@', '.', ':', '-'", request_id
        )
    action = body.get("action")
    door = body.get("door")
    on = body.get("on")
    if action in DOOR_ACTIONS:
        if not isinstance(door, str) or door not in doors:
            known = ", ".join(sorted(doors)) or "none"
            raise CommandError(
                "unknown-door",
                f"door: {str(door)[:64]!r} is not a door edged drives ({known})",
                request_id,
            )
        on = None
    elif action in MODE_ACTIONS:
        if not isinstance(on, bool):
            raise CommandError("malformed", "on: true or false is required", request_id)
        if door is not None and (not isinstance(door, str) or door not in scopes):
            raise CommandError(
                "unknown-door", f"door: {str(door)[:64]!r} is not a configured door", request_id
            )
    else:
        every = ", ".join(DOOR_ACTIONS + MODE_ACTIONS)
        raise CommandError(
            "malformed", f"action: {str(action)[:32]!r} is not one of {every}", request_id
        )
    return Command(str(action), door, on, nonce, float(ts), request_id, by)
