"""Helpers the store's tests share."""

from __future__ import annotations

import base64
import time

from edged.receive.normalize import normalize
from edged.store import events as store
from tests.conftest import recognition


def record(uuid: str, image: bytes | str | None = None, at: float | None = None) -> store.Record:
    """A recognition record as the receiver hands it to the store (``image``: JPEG or base64)."""
    text = base64.b64encode(image).decode() if isinstance(image, bytes) else (image or "")
    event = normalize(recognition(uuid=uuid, rgb_image=text))
    reply = {"code": 200, "msg": "success", "uuid": uuid}
    return store.Record(event, at or time.time(), None, "lobby", reply)
