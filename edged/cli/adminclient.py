"""The running daemon's admin API, as the commands call it: one line for every failure."""

from __future__ import annotations

import re
from typing import Any

from edged import config
from edged.errors import AdminError, DaemonDownError, DoorError, EdgedError


def admin_url(cfg: config.Config, path: str) -> str:
    """The admin API's URL for ``path``: its first listen address, a wildcard as loopback."""
    host, _, port = cfg.admin.listen[0].rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"http://{host}:{port}{path}"


def _unreachable(url: str, exc: Exception) -> DaemonDownError:
    """The one line for an admin API that does not answer (no ``[Errno 111]`` noise)."""
    reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)) or type(exc).__name__
    return DaemonDownError(f"cannot reach edged at {url}: {reason} (is it running?)")


def admin_get(cfg: config.Config, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET from the running daemon's admin API."""
    import httpx

    url = admin_url(cfg, path)
    try:
        response = httpx.get(url, params=params, timeout=10.0)
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from None
    if response.status_code >= 400 and response.status_code != 503:
        raise AdminError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    return response.json()


def admin_post(
    cfg: config.Config,
    path: str,
    body: dict[str, Any] | None = None,
    refused: type[EdgedError] = AdminError,
) -> Any:
    """POST to the running daemon's admin API with the admin token (``refused``: 422's error)."""
    import httpx

    token = config.admin_token(cfg)
    if not token:
        raise AdminError("no admin token is configured (admin.token_file or admin.token)")
    url = admin_url(cfg, path)
    headers = {"authorization": f"Bearer {token}"}
    try:
        response = httpx.post(url, json=body or {}, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise _unreachable(url, exc) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("msg") or response.text[:200]
        except (ValueError, AttributeError):
            message = response.text[:200]
        if response.status_code == 422:
            raise refused(message)
        error = DoorError if response.status_code == 404 and "/doors/" in path else AdminError
        raise error(f"{url}: HTTP {response.status_code}: {message}")
    return response.json()
