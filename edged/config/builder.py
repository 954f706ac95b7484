"""TOML in, typed frozen dataclasses out, every error reported at once (with its line)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from edged.config.checks import CROSS_CHECKS
from edged.config.schema import Config
from edged.errors import ConfigError

DEFAULT_PATH = "/etc/edged/edged.toml"


class _Locator:
    """Finds the line of a key path in the TOML text, for error messages."""

    _header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
    _key = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counts: dict[str, int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._header.match(line)
            if header:
                name = header.group(2).replace('"', "").replace("'", "").replace(" ", "")
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    name = f"{name}[{counts[name]}]"
                table = name
                self.lines.setdefault(table, number)
                continue
            key = self._key.match(line)
            if key:
                path = f"{table}.{key.group(1).strip(chr(34) + chr(39))}" if table else key.group(1)
                self.lines.setdefault(path, number)

    def line(self, path: str) -> int | None:
        """The line of ``path`` or of its nearest enclosing table."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return None


class _Builder:
    """Turns plain TOML values into typed dataclasses, collecting every problem."""

    def __init__(self, locator: _Locator) -> None:
        self.locator = locator
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        line = self.locator.line(path)
        where = f" (line {line})" if line else ""
        self.problems.append(f"{path}{where}: {message}")

    def build(self, cls: type, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"must be a table, not {_kind(data)}")
            return cls()
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            sub = f"{path}.{key}" if path else key
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.fail(sub, f"unknown key{hint}")
                continue
            value, ok = self.convert(hints[key], raw, sub)
            check = fields[key].metadata.get("check")
            if ok and check is not None:
                message = check(value)
                if message:
                    self.fail(sub, message)
                    continue
            if ok:
                values[key] = value
        return cls(**values)

    def convert(self, hint: Any, raw: Any, path: str) -> tuple[Any, bool]:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            count = len(self.problems)
            return self.build(hint, raw, path), len(self.problems) == count
        if origin is Literal:
            if raw in args:
                return raw, True
            self.fail(path, f"{raw!r} is not one of {', '.join(map(repr, args))}")
            return None, False
        if origin in (typing.Union, types.UnionType):
            for arg in args:
                if arg is type(None):
                    continue
                if _plain_match(arg, raw):
                    return self.convert(arg, raw, path)
            self.fail(path, f"must be {_describe(hint)}, not {_kind(raw)}")
            return None, False
        if origin is list:
            if not isinstance(raw, list):
                self.fail(path, f"must be a list, not {_kind(raw)}")
                return None, False
            items, ok = [], True
            for i, item in enumerate(raw):
                value, item_ok = self.convert(args[0], item, f"{path}[{i}]")
                items.append(value)
                ok = ok and item_ok
            return items, ok
        if origin is dict:
            if not isinstance(raw, dict):
                self.fail(path, f"must be a table, not {_kind(raw)}")
                return None, False
            out, ok = {}, True
            for key, item in raw.items():
                value, item_ok = self.convert(args[1], item, f"{path}.{key}")
                out[key] = value
                ok = ok and item_ok
            return out, ok
        if _plain_match(hint, raw):
            return (float(raw) if hint is float else raw), True
        self.fail(path, f"must be {_describe(hint)}, not {_kind(raw)}")
        return None, False


def _plain_match(hint: Any, raw: Any) -> bool:
    if hint is bool:
        return isinstance(raw, bool)
    if hint is int:
        return isinstance(raw, int) and not isinstance(raw, bool)
    if hint is float:
        return isinstance(raw, int | float) and not isinstance(raw, bool)
    if hint is str:
        return isinstance(raw, str)
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and isinstance(raw, origin)


def _describe(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    return getattr(hint, "__name__", str(hint))


def _kind(raw: Any) -> str:
    if isinstance(raw, bool):
        return "a boolean"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(raw), type(raw).__name__)


def parse(text: str, source: str = "<string>") -> Config:
    """Validate TOML text into a Config; raise ConfigError with every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    builder = _Builder(_Locator(text))
    cfg = builder.build(Config, data, "")
    problems = builder.problems
    if not problems:
        for check in CROSS_CHECKS:
            problems.extend(check(cfg))
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return dataclasses.replace(cfg, source=source)


def resolve_path(explicit: str | None) -> str:
    """The config file to read: ``-c``, else ``$EDGED_CONFIG``, else the default."""
    return explicit or os.environ.get("EDGED_CONFIG") or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    """Read and validate the configuration file."""
    resolved = resolve_path(path)
    try:
        text = Path(resolved).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{resolved}: no such file (use -c or EDGED_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{resolved}: cannot read: {exc}") from None
    return parse(text, resolved)
