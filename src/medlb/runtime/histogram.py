"""A fixed-bucket histogram of plain numbers, read by /metrics at scrape time.

The data path calls `observe` once per association or check; that is one bisect and
two additions, with no metrics library in the path (as for every other counter).
"""

from __future__ import annotations

import bisect
from typing import Iterator, Sequence

#: Association lifetimes: from a C-ECHO (milliseconds) to a long retrieve (an hour).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: Round trips on a LAN to a busy archive.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> Iterator[tuple[str, int]]:
        """(le, count of observations <= le), as Prometheus exposes buckets."""
        running = 0
        for bound, count in zip(self.bounds, self.counts):
            running += count
            yield repr(bound), running
        yield "+Inf", self.count
