"""``edged outbox``: the records waiting to be forwarded upstream."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from edged import config
from edged.cli import adminclient, common
from edged.errors import DaemonDownError


def _outbox_offline(cfg: config.Config) -> dict[str, Any]:
    """The outbox read from the database itself (the daemon is not running)."""
    from edged.store import readonly
    from edged.upstream import outbox

    if not cfg.upstream.forward_url:
        return {"enabled": False}
    conn = readonly.connect(cfg.storage.database_path)
    try:
        return {**outbox.status(conn, time.time()), "state": "daemon not running"}
    finally:
        conn.close()


def cmd_outbox(args: argparse.Namespace) -> int:
    """Show the records waiting to be forwarded to the upstream."""
    cfg = common.load(args)
    try:
        status = adminclient.admin_get(cfg, "/api/v1/outbox")
    except DaemonDownError:
        status = _outbox_offline(cfg)
    if args.json:
        print(json.dumps(status))
    elif not status.get("enabled"):
        print("forwarding is off (upstream.forward_url is not set)")
    else:
        print(
            f"outbox: {status['depth']} records waiting, oldest {status['age_seconds']:.0f} s "
            f"old; acknowledged up to id {status['forwarded_up_to']}"
        )
        state = status.get("state", "?")
        error = f" (last error: {status['last_error']})" if status.get("last_error") else ""
        print(f"forwarding to {cfg.upstream.forward_url}: {state}{error}")
    return 0
