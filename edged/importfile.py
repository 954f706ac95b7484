"""Reading import files: CSV rows and JSON documents, with the line each item starts on.

Validation is elsewhere (``edged.people``, ``edged.access``); this module only turns a file into
plain data and remembers where every item came from, so errors can name their line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from edged.errors import ImportFileError


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError([f"line {exc.lineno}: not valid JSON: {exc.msg}"]) from None


def _csv_records(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ImportFileError(["line 1: empty file (expected a header row)"])
    rows, problems = [], []
    for row in reader:
        extra = row.pop(None, None)  # type: ignore[call-overload]
        if extra:
            problems.append(f"line {reader.line_num}: more values than header columns")
            continue
        rows.append((reader.line_num, {k.strip(): v for k, v in row.items() if k}))
    if problems:
        raise ImportFileError(problems)
    return rows


def item_lines(text: str) -> dict[str, list[int]]:
    """The line each element of the document's top-level lists starts on (for error reports)."""
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")
    state = {"pos": 0, "line": 1}

    def line_at(index: int) -> int:
        state["line"] += text.count("\n", state["pos"], index)
        state["pos"] = index
        return state["line"]

    def skip(index: int) -> int:
        match = space.match(text, index)
        return match.end() if match else index

    def array(index: int) -> tuple[list[int], int]:
        lines: list[int] = []
        index = skip(index + 1)
        while text[index] != "]":
            lines.append(line_at(index))
            index = skip(decoder.raw_decode(text, index)[1])
            if text[index] == ",":
                index = skip(index + 1)
        return lines, index + 1

    out: dict[str, list[int]] = {}
    try:
        index = skip(0)
        if text[index] == "[":
            out["people"] = array(index)[0]
            return out
        index = skip(index + 1)
        while text[index] != "}":
            key, index = decoder.raw_decode(text, index)
            index = skip(skip(index) + 1)
            if text[index] == "[":
                out[key], index = array(index)
            else:
                index = decoder.raw_decode(text, index)[1]
            index = skip(index)
            if text[index] == ",":
                index = skip(index + 1)
    except (ValueError, IndexError):
        pass  # a shape we did not expect: fall back to item numbers
    return out


def read(path: Path, fmt: str | None = None) -> tuple[Any, dict[str, list[int]]]:
    """A file's content as a document (dict) or list of CSV records, with item lines."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError([f"{path}: cannot read: {exc}"]) from None
    fmt = fmt or ("json" if path.suffix.lower() == ".json" else "csv")
    if fmt == "json":
        return _json(text), item_lines(text)
    records = _csv_records(text)
    return {"people": [r for _, r in records]}, {"people": [n for n, _ in records]}
