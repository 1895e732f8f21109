"""DICOM routing and association counters of a service. Pure logic, no I/O.

Routing answers one question per association, from its AE titles alone: which pool,
or which A-ASSOCIATE-RJ. A title PS3.5 does not allow (a control character, a
backslash, a byte outside the default repertoire) is refused first, permanently
(1,1,3 or 1,1,7): forwarded, an archive aborts the association and the client would
hear "temporary congestion" and retry what can never succeed. Then the operator's
order: `allowed_calling_aes` (1,1,3), `routes` (first match wins), `unrouted` (the
default pool, or 1,1,7). Patterns are shell globs matched case-sensitively, as DICOM
compares AE titles.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from medlb.config.models import DicomConfig
from medlb.protocols.dicom import RJ_CALLED_AE_NOT_RECOGNISED, RJ_CALLING_AE_NOT_RECOGNISED, AssociateRequest
from medlb.runtime.histogram import DURATION_BUCKETS, Histogram
from medlb.runtime.stats import Recent

#: Reasons medlb refuses or ends an association before relaying it, as metric labels.
REJECT_REASONS = (
    "calling-ae-invalid",       # RJ 1,1,3: not a valid AE title (PS3.5)
    "called-ae-invalid",        # RJ 1,1,7: not a valid AE title (PS3.5)
    "calling-ae-not-allowed",   # RJ 1,1,3
    "called-ae-not-routed",     # RJ 1,1,7 (unrouted: reject)
    "protocol-version",         # RJ 1,2,2
    "no-server",                # RJ 2,3,1: no server could take it
    "max-connections",          # RJ 2,3,2
    "server-rejected",          # a server's permanent RJ, relayed
    "not-associate-rq",         # the first PDU was another type: A-ABORT
    "malformed",                # the A-ASSOCIATE-RQ did not parse: A-ABORT
    "oversized",                # above limits.max_associate_size: A-ABORT
    "artim-timeout",            # no A-ASSOCIATE-RQ within limits.associate_timeout: closed
)

#: Why an established association ended in an A-ABORT from medlb.
ABORT_CAUSES = (
    "server-gone",   # the server closed or lost the connection mid-association
    "client-gone",   # the client did
    "medlb",         # idle timeout, a halt with on_halt: close, or the stop timeout
)

#: Distinct AE titles kept as metric labels per service; more count under "other", so a
#: scan with random calling AEs cannot grow the metrics without bound.
MAX_AE_LABELS = 256
OTHER = "other"


def _compile(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True)
class Route:
    pool: str | None
    #: (result, source, reason) of the A-ASSOCIATE-RJ when pool is None.
    reject: tuple[int, int, int] | None = None
    reason: str = ""


class DicomRouter:
    def __init__(self, config: DicomConfig):
        self.unrouted = config.unrouted
        self._allowed = None if config.allowed_calling_aes is None else _compile(config.allowed_calling_aes)
        self._routes = [
            (None if r.called_ae is None else _compile([r.called_ae]),
             None if r.calling_ae is None else _compile([r.calling_ae]), r.pool)
            for r in config.routes
        ]

    def decide(self, request: AssociateRequest) -> Route:
        """The route of a parsed request: its titles checked, then route()."""
        if not request.calling_ae_valid:
            return Route(None, RJ_CALLING_AE_NOT_RECOGNISED, "calling-ae-invalid")
        if not request.called_ae_valid:
            return Route(None, RJ_CALLED_AE_NOT_RECOGNISED, "called-ae-invalid")
        return self.route(request.calling_ae, request.called_ae)

    def route(self, calling_ae: str, called_ae: str) -> Route:
        if self._allowed is not None and not self._allowed.match(calling_ae):
            return Route(None, RJ_CALLING_AE_NOT_RECOGNISED, "calling-ae-not-allowed")
        for called, calling, pool in self._routes:
            if (called is None or called.match(called_ae)) and (calling is None or calling.match(calling_ae)):
                return Route(pool)
        if self.unrouted == "reject":
            return Route(None, RJ_CALLED_AE_NOT_RECOGNISED, "called-ae-not-routed")
        return Route("default")


@dataclass
class AeCount:
    active: int = 0
    total: int = 0


@dataclass
class DicomStats:
    """Per-service association counters. One object lives across reloads (connections
    opened before a reload count down on the same object they counted up on)."""

    rejects: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    aborts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ABORT_CAUSES, 0))
    by_calling_ae: dict[str, AeCount] = field(default_factory=dict)
    by_called_ae: dict[str, AeCount] = field(default_factory=dict)
    active: int = 0
    total: int = 0
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS))
    #: The last rejected associations: AE titles and reason, no data.
    last_rejects: Recent = field(default_factory=Recent)

    def reject(self, reason: str, calling_ae: str = "", called_ae: str = "") -> None:
        self.rejects[reason] = self.rejects.get(reason, 0) + 1
        self.last_rejects.add(calling_ae=calling_ae, called_ae=called_ae, reason=reason)

    def abort(self, cause: str) -> None:
        self.aborts[cause] = self.aborts.get(cause, 0) + 1

    @staticmethod
    def _slot(table: dict[str, AeCount], title: str) -> AeCount:
        slot = table.get(title)
        if slot is None:
            title = title if len(table) < MAX_AE_LABELS else OTHER
            slot = table.setdefault(title, AeCount())
        return slot

    def opened(self, calling_ae: str, called_ae: str) -> tuple[AeCount, AeCount]:
        """Count an accepted association; returns the slots to give back to closed()."""
        calling = self._slot(self.by_calling_ae, calling_ae)
        called = self._slot(self.by_called_ae, called_ae)
        for slot in (calling, called):
            slot.active += 1
            slot.total += 1
        self.active += 1
        self.total += 1
        return calling, called

    def closed(self, slots: tuple[AeCount, AeCount], seconds: float) -> None:
        for slot in slots:
            slot.active -= 1
        self.active -= 1
        self.duration.observe(seconds)
