"""A fixed-bucket histogram: observed where the work is done, read at scrape time.

The receiver times its answers and the store its commits with one of these; the Prometheus
collector (edged/admin/metrics.py) reads them when it is scraped, so nothing is counted twice
and nothing below the admin room needs prometheus_client. One writer thread per histogram
(the loop, or the store's writer); a reader may see a count one observation ahead of the sum,
which Prometheus tolerates.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

# Seconds: from a fast commit on an SSD to a remote-auth request that waited for the upstream.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Counts of observations at or below each bound, their sum and their number."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = SECONDS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus exposes them, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            total += count
            out.append((repr(float(bound)), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out
