"""Counters of the message-level modes, kept on the Service (no I/O).

Labels are bounded: message types and reasons come from a small vocabulary, and
anything past `max_labels` distinct values is counted as `other`, so a sender cannot
grow the metrics without bound. No label ever holds message content.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from medlb.runtime.histogram import Histogram

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

    def message_type(self, label: str) -> str:
        if label in self._types:
            return label
        if len(self._types) < self.max_labels:
            self._types.add(label)
            return label
        return "other"


@dataclass
class HttpStats:
    """Requests of mode http. Status classes (2xx..5xx) and server names only."""

    #: (server name or "" for medlb's own answers, status class) -> requests
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: From the request head arriving to the response head leaving, per server.
    latency: dict[str, Histogram] = field(default_factory=dict)
    #: Answers medlb made itself, by reason (no_server, bad_gateway, timeout, header_too_large...).
    errors: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0

    def observe(self, server: str, status: int, seconds: float) -> None:
        self.requests[(server, f"{status // 100}xx")] += 1
        histogram = self.latency.get(server)
        if histogram is None:
            histogram = self.latency[server] = _response_histogram()
        histogram.observe(seconds)
