"""Counters of the message-level modes, kept on the Service (no I/O).

Labels are bounded: message types and reasons come from a small vocabulary, and
anything past `max_labels` distinct values is counted as `other`, so a sender cannot
grow the metrics without bound. No label ever holds message content.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from medlb.runtime.histogram import Histogram

#: Failures of one kind each list keeps (the newest): what the page shows of them.
RECENT_FAILURES = 20


@dataclass
class Recent:
    """The last failures of one kind, oldest first, at most `limit`: each a small dict of
    codes, reasons, AE titles and server names with its time `at`, never message content
    or patient data. With workers, each keeps its own and the control process merges
    them by time (workers/replica.py)."""

    limit: int = RECENT_FAILURES
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **entry: Any) -> None:
        self.entries.append({"at": time.time(), **entry})
        if len(self.entries) > self.limit:
            del self.entries[0]

    @classmethod
    def merged(cls, parts: list["Recent"], limit: int = RECENT_FAILURES) -> "Recent":
        entries = sorted((entry for part in parts for entry in part.entries), key=lambda entry: entry["at"])
        return cls(limit, entries[-limit:])

    def newest_first(self) -> list[dict[str, Any]]:
        return list(reversed(self.entries))

#: Message and request latencies in seconds: HL7 ACKs and HTTP answers are often
#: sub-millisecond on a LAN, so the buckets start finer than the DICOM ones.
RESPONSE_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                       1.0, 2.5, 5.0, 10.0, 30.0)


def _response_histogram() -> Histogram:
    return Histogram(RESPONSE_BUCKETS)


@dataclass
class MllpStats:
    max_labels: int = 200
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, server)
    acks: Counter[tuple[str, str]] = field(default_factory=Counter)  # (server, code)
    naks: Counter[str] = field(default_factory=Counter)  # reason -> negative ACKs medlb sent
    nak_codes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (AE or AR, reason)
    #: medlb's own negative ACKs and the engines' relayed ones, newest last.
    last_failures: Recent = field(default_factory=Recent)
    retries: int = 0
    mismatched_acks: int = 0
    oversized: int = 0
    unreadable: int = 0
    junk_bytes: int = 0
    #: Bytes of unfinished frames held now (counted against mllp.partial_frames_budget).
    partial_frame_bytes: int = 0
    in_flight: int = 0
    queued: int = 0
    ack_latency: Histogram = field(default_factory=_response_histogram)
    _types: set[str] = field(default_factory=set)

    def nak(self, code: str, reason: str) -> None:
        """A negative ACK medlb answered itself (AE: no server acknowledged; AR: refused)."""
        self.naks[reason] += 1
        self.nak_codes[(code, reason)] += 1
        self.last_failures.add(code=code, reason=reason, server="")

    def message_type(self, label: str) -> str:
        if label in self._types:
            return label
        if len(self._types) < self.max_labels:
            self._types.add(label)
            return label
        return "other"


#: "1xx".."9xx" by status // 100, made once rather than per response.
_STATUS_CLASSES = tuple(f"{n}xx" for n in range(10))


@dataclass
class HttpStats:
    """Requests of mode http. Status classes (2xx..5xx) and server names only."""

    #: (server name or "" for medlb's own answers, status class) -> requests
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: From the request head arriving to the response head leaving, per server.
    latency: dict[str, Histogram] = field(default_factory=dict)
    #: Answers medlb made itself, by reason (no_server, bad_gateway, timeout, header_too_large...).
    errors: Counter[str] = field(default_factory=Counter)
    #: medlb's own 502, 503 and 504 answers, newest last.
    last_errors: Recent = field(default_factory=Recent)
    in_flight: int = 0

    def gateway_error(self, status: int, reason: str, server: str = "") -> None:
        """Count a 502/503/504 medlb answers itself, and keep it among the last ones."""
        self.errors[reason] += 1
        self.last_errors.add(status=status, reason=reason, server=server)

    def observe(self, server: str, status: int, seconds: float) -> None:
        """Once per response: Histogram.observe is written out here (one call less)."""
        self.requests[(server, _STATUS_CLASSES[status // 100])] += 1
        histogram = self.latency.get(server)
        if histogram is None:
            histogram = self.latency[server] = _response_histogram()
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.sum += seconds
        histogram.count += 1
