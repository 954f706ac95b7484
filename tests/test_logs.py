"""Log formats and rate limiting."""

from __future__ import annotations

import json
import logging

import pytest

from edged import logs

pytestmark = pytest.mark.usefixtures("restore_root_logger")


def emit(
    fmt: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    journal: bool = False,
) -> str:
    if journal:
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    else:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.setup("info", fmt)
    logging.getLogger("edged.test").error("door %s forced", "lobby")
    logging.getLogger("edged.test").debug("hidden")
    return capsys.readouterr().err


def test_journal_format_has_priority_and_no_time(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert emit("auto", capsys, monkeypatch, journal=True) == "<3>edged.test: door lobby forced\n"


def test_text_format_has_time(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    line = emit("auto", capsys, monkeypatch)
    assert line.endswith("ERROR   edged.test: door lobby forced\n") and line[:2] == "20"


def test_json_format(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    entry = json.loads(emit("json", capsys, monkeypatch))
    assert entry["level"] == "error" and entry["msg"] == "door lobby forced"


def test_rate_limited_log_counts_and_summarises(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    limited = logs.RateLimitedLog(logging.getLogger("edged.flood"), per_minute=3)
    with caplog.at_level(logging.WARNING):
        results = [limited.warning("json", "bad %d", i) for i in range(10)]
        assert results == [True] * 3 + [False] * 7
        assert limited.warning("source", "other kind") is True  # its own budget
        now[0] += 61
        assert limited.warning("json", "bad again") is True
    messages = [r.getMessage() for r in caplog.records]
    assert "7 more 'json' messages suppressed in the last minute" in messages
    assert len(messages) == 6
