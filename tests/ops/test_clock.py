"""The gateway clock check."""

from __future__ import annotations

import logging
import time

import pytest

from edged.ops import clockcheck as clock


def test_now_is_plausible() -> None:
    assert clock.plausible(time.time())
    assert clock.report(time.time())


def test_a_clock_before_the_build_is_reported_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert clock.report(clock.BUILD_EPOCH - 86400) is False
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and "earlier than this build" in record.getMessage()
    assert not clock.plausible(0.0)
