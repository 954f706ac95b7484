"""The web page's accounts: names and scrypt password hashes in one JSON file.

``edged web passwd NAME`` writes the file (atomically, mode 0600, owned like the state folder
so the daemon's ``edged`` user reads it); the daemon reads it again whenever its modification
time or size changes, so an account added or a password changed needs no restart. Passwords are
hashed with the standard library's ``hashlib.scrypt`` (n=2**14, r=8, p=1: 16 MiB and some tens
of milliseconds a check on a gateway), salted per account, compared in constant time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.errors import ConfigError, UsageError

N, R, P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", re.ASCII)
# What a login with an unknown name is checked against: the same work as a real account's.
_DUMMY = f"scrypt${N}${R}${P}${'A' * 22}${'A' * 43}"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$key`` (base64 without padding)."""
    salt = salt or secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=KEY_BYTES)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(key)}"


def verify(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (False for anything malformed)."""
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        want = _unb64(key)
        got = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=64 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_name(name: str) -> str:
    """An account name as edged takes it; UsageError otherwise."""
    if not NAME.fullmatch(name):
        raise UsageError(
            f"{name[:70]!r} is not an account name: 1-64 of letters, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    """A password long enough; UsageError otherwise."""
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"a password has at most {MAX_PASSWORD} characters")
    return password


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def read(path: Path) -> dict[str, dict[str, Any]]:
    """The accounts by name ({} when the file does not exist); ConfigError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(
            [f"{path}: cannot read the web accounts: {exc.strerror or exc}"]
        ) from None
    try:
        data = json.loads(text)
        accounts = data["accounts"]
        if not isinstance(accounts, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("hash"), str) for v in accounts.values()
        ):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            [f"{path}: not a web accounts file (edged web passwd writes one)"]
        ) from None
    return accounts


def write(path: Path, accounts: dict[str, dict[str, Any]]) -> None:
    """Replace the file atomically: mode 0600, owner and group those of its folder."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": 1, "accounts": accounts}, indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".web-accounts.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        if os.geteuid() == 0:  # root writes it for the daemon's user (the state folder's owner)
            owner = folder.stat()
            os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def set_password(path: Path, name: str, password: str) -> bool:
    """Create the account or change its password; whether it is new."""
    accounts = read(path)
    new = name not in accounts
    accounts[check_name(name)] = {
        "hash": hash_password(check_password(password)),
        "changed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write(path, accounts)
    return new


def remove(path: Path, name: str) -> bool:
    """Remove the account; whether it existed."""
    accounts = read(path)
    if accounts.pop(name, None) is None:
        return False
    write(path, accounts)
    return True


@dataclass
class Accounts:
    """The accounts file as the daemon reads it: again whenever it changes on disk."""

    path: Path
    _seen: tuple[int, int] | None = None
    _accounts: dict[str, dict[str, Any]] | None = None

    def current(self) -> dict[str, dict[str, Any]]:
        """The accounts now; a file that became unreadable keeps the last good copy."""
        try:
            st = self.path.stat()
            mark = (st.st_mtime_ns, st.st_size)
        except OSError:
            mark = (0, 0)
        if mark != self._seen or self._accounts is None:
            try:
                self._accounts = read(self.path) if mark != (0, 0) else {}
            except ConfigError:
                if self._accounts is None:
                    self._accounts = {}
            self._seen = mark
        return self._accounts

    def check(self, name: str, password: str) -> bool:
        """Whether the name and password are an account's (a slow call: run it in a thread).

        An unknown name costs the same scrypt work as a known one, so timing tells nothing.
        """
        account = self.current().get(name)
        stored = account["hash"] if account else _DUMMY
        ok = verify(password[:MAX_PASSWORD], stored)
        return ok and account is not None

    def any(self) -> bool:
        """Whether at least one account exists (the login page says how to make one)."""
        return bool(self.current())
