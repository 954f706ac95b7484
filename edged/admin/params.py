"""Parsing of the admin API's input: integers SQLite can hold, JSON bodies of bounded depth.

Python's ``int()`` takes full-width and other Unicode digits (U+FF11 is 1) and any size, which
SQLite refuses with an OverflowError; ``json.loads`` recurses once per nesting level, and where
that stops differs between Pythons (3.11 raises RecursionError at some thousand levels, 3.13
parses 100,000), so the depth is bounded here before parsing. These helpers turn all of that
into a ``ValueError`` with a message fit for a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

INT64 = (-(2**63), 2**63 - 1)  # SQLite's INTEGER
_DECIMAL = re.compile(r"-?[0-9]{1,20}", re.ASCII)
# No admin body needs more: a people document is four levels deep.
MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def strict_int(text: str, name: str) -> int:
    """An ASCII decimal integer within SQLite's 64 bits; ``ValueError`` naming ``name``."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{name}: {text[:40]!r} is not an integer")
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{name}: {text!r} is out of range (64-bit integers only)")
    return value


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests arrays and objects more than ``limit`` deep (strings skipped).

    Only the brackets outside strings are kept, objects' as arrays'; each pass then removes the
    innermost pairs, one level: C-speed work even on a large people document.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(_AS_SQUARE, _NOT_BRACKETS)
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # empty, or unbalanced (json.loads refuses that)
            return False
        brackets = shorter
    return b"[]" in brackets


def load_json(raw: bytes | str) -> Any:
    """A request body's JSON; ``ValueError`` if it is not JSON or nested too deeply."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if too_deep(data):
        raise ValueError(f"body is nested too deeply (at most {MAX_DEPTH} levels)")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and numbers of more than 4300 digits
        raise ValueError("body is not valid JSON") from None
