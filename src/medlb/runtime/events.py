"""Changes to the runtime model, as small serialisable records.

Everything that changes a service's live state (an operator's action, a health check's
result, a failback, a new config) is one of these events, applied with
`Runtime.apply` in the control process, the one place decisions are made. Workers do
not receive these records: they adopt the decided state as a whole
(`Runtime.snapshot()` / `Runtime.adopt()`), so a worker that missed a message catches
up from the next one. `Change` records come back out: what actually changed, for logs,
audit, the page and the data planes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

State = Literal["online", "drain", "halt"]
STATES: tuple[str, ...] = ("online", "drain", "halt")


@dataclass(frozen=True)
class SetState:
    service: str
    server: str
    state: State
    who: str = "system"


@dataclass(frozen=True)
class CheckResult:
    service: str
    server: str
    ok: bool
    reason: str
    latency: float
    at: float = 0.0
    #: dicom-echo: the C-ECHO request/response round trip alone (without association).
    echo_seconds: float | None = None


@dataclass(frozen=True)
class Failback:
    """Return a pool (or every pool of the service, pool=None) from backup to primary."""

    service: str
    pool: str | None = None
    who: str = "system"


@dataclass(frozen=True)
class SetFailedOver:
    """Restore a pool's stored 'staying on backup' flag at start-up."""

    service: str
    pool: str
    failed_over: bool


Event = SetState | CheckResult | Failback | SetFailedOver


@dataclass(frozen=True)
class Change:
    """Something that changed because of an event.

    kind: `state` (operator state), `health` (up/down), `pool` (the active tier of a
    pool changed: primary, backup or none), `failed_over` (the sticky flag of a manual
    failback pool).
    """

    kind: str
    service: str
    subject: str
    old: str
    new: str
    reason: str = ""
    who: str = "system"
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
