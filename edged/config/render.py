"""The effective configuration as plain data (secrets masked) and as TOML, for ``--print``."""

from __future__ import annotations

import dataclasses
import re
from typing import Any


def to_dict(obj: Any, mask: bool = True) -> Any:
    """The effective configuration as plain data, secrets masked."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.metadata.get("internal"):
                continue
            value = getattr(obj, f.name)
            if mask and f.metadata.get("secret") and value:
                out[f.name] = "********"
            else:
                out[f.name] = to_dict(value, mask)
        return out
    if isinstance(obj, list):
        return [to_dict(v, mask) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, mask) for k, v in obj.items()}
    return obj


def to_toml(data: dict[str, Any]) -> str:
    """Render plain config data as TOML (for ``check-config --print``)."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list) or _scalar_list(v)}
    for key, value in scalars.items():
        if value is None:  # TOML has no null: an unset optional key is left out
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            for sub, item in value.items():
                if item is not None:
                    lines.append(f"{_toml_key(sub)} = {_toml_value(item)}")
        elif isinstance(value, list) and not _scalar_list(value):
            for item in value:
                lines.append(f"\n[[{key}]]")
                for sub, sub_value in item.items():
                    if sub_value is None:
                        continue
                    lines.append(f"{_toml_key(sub)} = {_toml_value(sub_value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict) for v in value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{ " + inner + " }"
    return _toml_value(str(value))
