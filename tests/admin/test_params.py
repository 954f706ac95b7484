"""The admin API's input checks: the JSON depth bound holds on every Python."""

from __future__ import annotations

import pytest

from edged.admin import params


def nested(levels: int, inner: bytes = b"1") -> bytes:
    return (
        b'{"a":[' * (levels // 2)
        + b"[" * (levels % 2)
        + inner
        + b"]" * (levels % 2)
        + b"]}" * (levels // 2)
    )


def test_the_bound_is_exact_for_arrays_and_objects() -> None:
    assert params.load_json(nested(params.MAX_DEPTH)) is not None
    with pytest.raises(ValueError, match="nested too deeply"):
        params.load_json(nested(params.MAX_DEPTH + 1))


def test_brackets_inside_strings_are_not_structure() -> None:
    text = b'{"name": "' + b"[{" * 500 + b'\\" ]}"}'
    assert params.load_json(text)["name"].startswith("[{[{")
    assert not params.too_deep(text)


def test_100000_levels_are_refused_before_parsing() -> None:
    # Python 3.13's json parses this; 3.11 raises RecursionError: the answer is the same.
    with pytest.raises(ValueError, match="nested too deeply"):
        params.load_json(b"[" * 100_000 + b"]" * 100_000)
