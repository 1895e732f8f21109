"""What every health checker receives and returns.

A checker is one async function `check(target, config) -> Outcome`. It raises nothing
for a server that is down: it returns Outcome(False, reason), and the reason is what
the operator reads in the API and the log ("connection refused", "status 500").
Timeouts are applied by the runner, so a checker needs no timer of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable


@dataclass(frozen=True)
class CheckTarget:
    service: str
    server: str
    host: str
    port: int
    #: The server's own AE title (DICOM checks call it).
    ae_title: str | None = None
    #: The service's dicom.ae_title in mode dicom: the checks' calling AE by default.
    local_ae: str | None = None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str
    #: dicom-echo: the C-ECHO round trip alone, for its latency histogram.
    echo_seconds: float | None = None


Checker = Callable[[CheckTarget, Any], Awaitable[Outcome]]


def describe_os_error(exc: OSError) -> str:
    """A short reason for a failed connect, without a stack trace."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return exc.strerror or exc.__class__.__name__
