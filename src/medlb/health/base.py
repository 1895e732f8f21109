"""What every health checker receives and returns.

A checker is one async function `check(target, config) -> Outcome`. It raises nothing
for a server that is down: it returns Outcome(False, reason), and the reason is what
the operator reads in the API and the log ("connection refused", "status 500").
Timeouts are applied by the runner, so a checker needs no timer of its own.

A check that fails for a reason of this host (no descriptor, no buffer, no memory for
its socket) says nothing about the server: it carries `local_error`, and the runner
counts it as medlb's error instead of the server's failure.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from medlb.config.models import BackendTlsConfig
from medlb.tls import backend_server_name, client_context


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
    #: The service's backend_tls: HTTP-based checks then go over TLS with these settings.
    backend_tls: BackendTlsConfig | None = None
    base_dir: Path | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.backend_tls is None:
            return None
        key = (self.backend_tls.model_dump_json(), str(self.base_dir))
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = client_context(self.backend_tls, self.base_dir)
        return context

    @property
    def server_name(self) -> str:
        return self.host if self.backend_tls is None else backend_server_name(self.backend_tls, self.host)


#: Client contexts for checks, by settings; cleared on every (re)load so files are re-read.
_contexts: dict[tuple[str, str], ssl.SSLContext] = {}


def forget_contexts() -> None:
    _contexts.clear()


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reason: str
    #: dicom-echo: the C-ECHO round trip alone, for its latency histogram.
    echo_seconds: float | None = None
    #: Why medlb itself could not check (an errno name such as EMFILE); None for an
    #: outcome that says something about the server.
    local_error: str | None = None


#: Errors of this host, not of the server: out of descriptors (per process or system
#: wide), out of socket buffers, out of memory.
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def local_error(exc: OSError) -> str | None:
    """The errno name when `exc` is an error of this host rather than of the server.
    A name lookup that failed with a system error (EAI_SYSTEM: getaddrinfo could not
    open what it needs) counts too."""
    if isinstance(exc, socket.gaierror):
        return "EAI_SYSTEM" if exc.errno == socket.EAI_SYSTEM else None
    if exc.errno in LOCAL_ERRNOS:
        return errno.errorcode[exc.errno]
    return None


Checker = Callable[[CheckTarget, Any], Awaitable[Outcome]]


def describe_os_error(exc: OSError) -> str:
    """A short reason for a failed connect, without a stack trace."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc.__class__.__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    return exc.strerror or exc.__class__.__name__
