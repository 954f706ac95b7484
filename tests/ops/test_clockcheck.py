"""The gateway clock check."""

from __future__ import annotations

import logging
import time

import pytest

from edged.ops import clockcheck


def test_now_is_plausible() -> None:
    assert clockcheck.plausible(time.time())
    assert clockcheck.report(time.time())


def test_a_clock_before_the_build_is_reported_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert clockcheck.report(clockcheck.BUILD_EPOCH - 86400) is False
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and "earlier than this build" in record.getMessage()
    assert not clockcheck.plausible(0.0)
