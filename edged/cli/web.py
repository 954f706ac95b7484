"""``edged web passwd|users|remove``: the web page's accounts (edged/web/accounts.py)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from edged.cli import common
from edged.errors import NotFoundError, UsageError


def _path(args: argparse.Namespace) -> Path:
    cfg = common.load(args)
    return cfg.web.accounts_path(cfg.storage.state_dir)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("web passwd: no terminal to ask on: use --password-stdin")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("web passwd: the two passwords differ; nothing changed")
    return first


def cmd_passwd(args: argparse.Namespace) -> int:
    """Create a web account or set its password."""
    from edged.web import accounts

    path = _path(args)
    accounts.check_name(args.name)
    password = accounts.check_password(_read_password(args))
    new = accounts.set_password(path, args.name, password)
    verb = "created" if new else "password changed; its open sessions are logged out"
    print(f"{args.name}: {verb} ({path})")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    """List the web accounts."""
    from edged.web import accounts

    found = accounts.read(_path(args))
    if not found:
        print("no web accounts: create one with `edged web passwd NAME`", file=sys.stderr)
    for name, account in sorted(found.items()):
        print(f"{name:<24} password set {account.get('changed_at', '?')}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Remove a web account (its sessions end at their next request)."""
    from edged.web import accounts

    if not accounts.remove(_path(args), args.name):
        raise NotFoundError(f"no web account {args.name!r}")
    print(f"{args.name}: removed")
    return 0
