"""Reading import files: CSV rows and JSON documents, with the line each item starts on.

Validation is elsewhere (``edged.access.people``, ``edged.access.model``); this module only
turns a file into plain data and remembers where every item came from, so errors can name
their line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from edged.errors import ImportFileError, NotFoundError


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError([f"line {exc.lineno}: not valid JSON: {exc.msg}"]) from None


MULTILINE_COLUMNS = ("notes",)  # the only CSV column whose quoted value may span lines


def _csv_header(reader: Any) -> list[str]:
    """The header row, stripped; refused when empty, with a blank or repeated column."""
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise ImportFileError(["line 1: empty file (expected a header row)"]) from None
    except csv.Error as exc:
        raise ImportFileError([f"line 1: {_csv_error(exc)}"]) from None
    problems = [f"line 1: column {i + 1} has no name" for i, n in enumerate(header) if not n]
    repeated = sorted({n for n in header if n and header.count(n) > 1})
    problems += [f"line 1: column {name!r} appears twice" for name in repeated]
    if problems:
        raise ImportFileError(problems)
    return header


def _csv_error(exc: csv.Error) -> str:
    text = str(exc)
    if "unexpected end of data" in text:
        return "a quoted value opened in this row is never closed (the file ends inside it)"
    return f"bad quoting: {text}"


def _csv_row(header: list[str], values: list[str], start: int, end: int) -> list[str]:
    """Problems of one data row: its width, and values broken over lines by a stray quote."""
    if len(values) != len(header):
        side = "more" if len(values) > len(header) else "fewer"
        return [f"line {start}: {side} values ({len(values)}) than header columns ({len(header)})"]
    return [
        f"line {start}: {column}: the quoted value runs over lines {start}-{end} "
        "(an unclosed quote?)"
        for column, value in zip(header, values, strict=True)
        if ("\n" in value or "\r" in value) and column not in MULTILINE_COLUMNS
    ]


def _csv_records(text: str) -> list[tuple[int, dict[str, Any]]]:
    """Rows as (line the row starts on, column -> value); every problem at once, or none."""
    reader = csv.reader(io.StringIO(text), strict=True)
    header = _csv_header(reader)
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[str] = []
    end = reader.line_num
    while True:
        start = end + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # the rest of the file cannot be trusted: stop here
            problems.append(f"line {start}: {_csv_error(exc)}")
            break
        end = reader.line_num
        if not values:
            continue  # a blank line
        found = _csv_row(header, values, start, end)
        problems.extend(found)
        if not found:
            rows.append((start, dict(zip(header, values, strict=True))))
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
    except OSError as exc:
        raise NotFoundError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    return parse_text(text, fmt or ("json" if path.suffix.lower() == ".json" else "csv"))


def parse_text(text: str, fmt: str) -> tuple[Any, dict[str, list[int]]]:
    """A document's text (``json`` or ``csv``) as a document or list of records, with lines."""
    if fmt == "json":
        return _json(text), item_lines(text)
    records = _csv_records(text)
    return {"people": [r for _, r in records]}, {"people": [n for n, _ in records]}
