"""The live stream's buffer: it never blocks the listener, loses the oldest, ends at stop."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from edged.receive.normalize import normalize
from edged.web import live as livemod
from tests.conftest import recognition

pytestmark = pytest.mark.anyio


def record(i: int, decision: str | None = None) -> tuple[Any, Any, Any]:
    event = normalize(recognition(uuid=f"l{i}"))
    rec = SimpleNamespace(
        received_at=1_800_000_000.0 + i,
        terminal="lobby",
        door="lobby",
        person_id="e-1",
        decision=decision,
        reason=None,
        door_outcome=None,
    )
    return event, rec, SimpleNamespace(id=i, duplicate=False, replayed=False)


async def collect(live: livemod.Live, stream: livemod.Stream, keep: Any = None) -> list[str]:
    out: list[str] = []
    async for chunk in live.events(stream, lambda: {"doors": []}, keep or (lambda item: True)):
        out.append(chunk)
    return out


async def test_records_reach_the_stream_and_stop_ends_it() -> None:
    stopping = asyncio.Event()
    live = livemod.Live(stopping)
    stream = live.open()
    task = asyncio.create_task(collect(live, stream, lambda item: item["decision"] == "pass"))
    await asyncio.sleep(0)
    live.on_record(*record(1, "pass"))
    live.on_record(*record(2, "deny"))
    dup = record(3, "pass")
    dup[2].duplicate = True
    live.on_record(*dup)
    await asyncio.sleep(livemod.COALESCE * 3)
    stopping.set()
    live.close()
    chunks = await task
    text = "".join(chunks)
    assert text.startswith("event: state\n")
    assert "id: 1\nevent: record" in text and "id: 2\n" not in text and "id: 3\n" not in text
    assert stream not in live.streams


async def test_a_slow_stream_loses_the_oldest_and_is_told() -> None:
    live = livemod.Live(asyncio.Event())
    stream = live.open()
    for i in range(livemod.BUFFER + 10):
        live.on_record(*record(i, "pass"))
    assert len(stream.waiting) == livemod.BUFFER and stream.lost == 10
    assert stream.waiting[0]["id"] == 10
    task = asyncio.create_task(collect(live, stream))
    await asyncio.sleep(0.05)
    live.stopping.set()
    live.close()
    text = "".join(await task)
    assert "event: gap\ndata: 10\n" in text
    assert "id: 9\n" not in text and f"id: {livemod.BUFFER + 9}\n" in text


def test_streams_are_bounded() -> None:
    live = livemod.Live(asyncio.Event())
    for _ in range(livemod.MAX_STREAMS):
        live.open()
    with pytest.raises(livemod.TooManyStreams):
        live.open()


def test_no_stream_no_work() -> None:
    live = livemod.Live(asyncio.Event())
    live.on_record(*record(1, "pass"))
    assert live.pushed == 0
