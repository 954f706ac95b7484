"""Helpers the web tests share: a web-enabled configuration, an account, a logged-in client."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from edged.config import Config
from edged.web import accounts

NAME, PASSWORD = "ann", "correct horse battery"
WEB_TOML = "\n[web]\nenabled = true\nlogin_attempts = 3\n"


def web_config(make_config: Callable[..., Config], extra: str = "") -> Config:
    """The base test configuration with [web] on and the account ann."""
    cfg = make_config(WEB_TOML + extra)
    accounts.set_password(cfg.web.accounts_path(cfg.storage.state_dir), NAME, PASSWORD)
    return cfg


def client(base_url: str, **kw: Any) -> httpx.Client:
    """A client that opens a connection per request: on bookworm's hypercorn 0.13 a kept-alive
    connection idle for about a second is at times closed without an answer to its next
    request (seen on main as well), which is not what these tests are about."""
    return httpx.Client(
        base_url=base_url,
        limits=httpx.Limits(max_keepalive_connections=0),
        **kw,
    )


def login(client: httpx.Client, name: str = NAME, password: str = PASSWORD) -> httpx.Response:
    return client.post("/ui/login", data={"name": name, "password": password, "next": "/ui/"})


def csrf_of(html: str) -> str:
    """The CSRF token a page carries (its meta tag)."""
    found = re.search(r'<meta name="csrf" content="([^"]*)">', html)
    assert found, "no csrf meta tag on the page"
    return found.group(1)
