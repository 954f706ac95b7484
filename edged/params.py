"""Parsing of the admin API's input: integers SQLite can hold, JSON bodies of bounded depth.

Python's ``int()`` takes full-width and other Unicode digits (U+FF11 is 1) and any size, which
SQLite refuses with an OverflowError; ``json.loads`` recurses once per nesting level. These
helpers turn all of that into a ``ValueError`` with a message fit for a 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

INT64 = (-(2**63), 2**63 - 1)  # SQLite's INTEGER
_DECIMAL = re.compile(r"-?[0-9]{1,20}", re.ASCII)


def strict_int(text: str, name: str) -> int:
    """An ASCII decimal integer within SQLite's 64 bits; ``ValueError`` naming ``name``."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{name}: {text[:40]!r} is not an integer")
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{name}: {text!r} is out of range (64-bit integers only)")
    return value


def load_json(raw: bytes | str) -> Any:
    """A request body's JSON; ``ValueError`` if it is not JSON or nested too deeply."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and numbers of more than 4300 digits
        raise ValueError("body is not valid JSON") from None
