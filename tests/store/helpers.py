"""Helpers the store's tests share."""

from __future__ import annotations

import base64
import time
from typing import Any

from edged.receive.normalize import normalize
from edged.store import events as store
from tests.conftest import recognition


def record(uuid: str, image: bytes | str | None = None, at: float | None = None) -> store.Record:
    """A recognition record as the receiver hands it to the store (``image``: JPEG or base64)."""
    text = base64.b64encode(image).decode() if isinstance(image, bytes) else (image or "")
    event = normalize(recognition(uuid=uuid, rgb_image=text))
    reply = {"code": 200, "msg": "success", "uuid": uuid}
    return store.Record(event, at or time.time(), None, "lobby", reply)


def commits_seen(st: store.Store) -> list[list[str]]:
    """The uuids of each commit of records, in order (the real commit, observed)."""
    seen: list[list[str]] = []
    real = st._commit_records

    def observed(items: list[Any]) -> Any:
        seen.append([i.record.event.uuid for i in items])
        return real(items)

    st._commit_records = observed  # type: ignore[method-assign]
    return seen
