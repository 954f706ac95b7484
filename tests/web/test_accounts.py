"""Web accounts: scrypt hashes in a 0600 file, read again when it changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edged.errors import ConfigError, UsageError
from edged.web import accounts


def test_hash_and_verify() -> None:
    stored = accounts.hash_password("s3cret-pass")
    assert stored.startswith("scrypt$16384$8$1$") and "s3cret" not in stored
    assert accounts.verify("s3cret-pass", stored)
    assert not accounts.verify("s3cret-pasS", stored)
    assert accounts.hash_password("s3cret-pass") != stored  # salted
    for bad in ("", "scrypt$x", "md5$1$2$3$4$5", "scrypt$16384$8$1$!!$!!"):
        assert not accounts.verify("s3cret-pass", bad)


def test_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state" / "web-accounts.json"
    assert accounts.set_password(path, "ann", "password-1") is True
    assert accounts.set_password(path, "ann", "password-2") is False
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    data = json.loads(path.read_text())
    assert set(data["accounts"]) == {"ann"} and "password" not in path.read_text()
    live = accounts.Accounts(path)
    assert live.check("ann", "password-2") and not live.check("ann", "password-1")
    assert not live.check("bob", "password-2")
    accounts.set_password(path, "bob", "password-3")
    os.utime(path, ns=(1, 1))  # a change the reader must notice even within the same second
    assert live.check("bob", "password-3")
    assert accounts.remove(path, "bob") and not accounts.remove(path, "bob")
    assert not live.check("bob", "password-3")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "ann\n", "ü"])
def test_bad_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError):
        accounts.check_name(name)


def test_short_password_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="at least 8"):
        accounts.check_password("short")


def test_a_broken_file_is_a_clear_error_and_the_daemon_keeps_its_copy(tmp_path: Path) -> None:
    path = tmp_path / "web-accounts.json"
    accounts.set_password(path, "ann", "password-1")
    live = accounts.Accounts(path)
    assert live.any()
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a web accounts file"):
        accounts.read(path)
    assert live.check("ann", "password-1")  # the last good copy
