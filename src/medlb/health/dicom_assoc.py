"""What the DICOM checks share: pynetdicom on its own threads, AE titles, and the
reason an association did not come up.

pynetdicom is thread based and blocking (an Association is a Thread), so each check
runs in a worker of a dedicated pool: not asyncio's default executor, which also
resolves host names for the proxies' connects and must not wait behind a slow PACS.
Every pynetdicom timeout is set below the check's own timeout, so a worker ends by
itself shortly after the runner has given up on it, and threads cannot pile up.

pynetdicom logs through the `pynetdicom` logger, at debug level with whole data sets
(C-FIND identifiers carry patient names). That logger is silenced here: the outcome's
reason is the only thing a check says, and it holds codes and AE titles only.

pynetdicom asks `select()` whether its socket has data, and select() refuses descriptor
numbers above 1023: in a busy medlb (which raises its open-file limit) every DICOM
check would then fail and mark its server down. `poll()` has no such bound, so the
socket's `ready` asks poll() instead.
"""

from __future__ import annotations

import asyncio
import logging
import select
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

# Imported once, at start (~150 ms): inside the first check it would count against its timeout.
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket

from medlb.health.base import CheckTarget, Outcome
from medlb.protocols.dicom import Abort, describe_rejection

_logger = logging.getLogger("pynetdicom")
_logger.setLevel(logging.CRITICAL)
_logger.propagate = False


def _ready(self: AssociationSocket) -> bool:
    """AssociationSocket.ready (pynetdicom 3.0) with poll() for select()."""
    sock = self.socket
    if sock is None or self._is_connected is False:
        return False
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        ready = bool(poller.poll(0))
    except (OSError, ValueError):
        self.event_queue.put("Evt17")  # the transport connection closed
        return False
    # An SSLSocket may hold decrypted data that poll() does not see.
    return ready or (isinstance(sock, ssl.SSLSocket) and bool(sock.pending()))


AssociationSocket.ready = property(_ready)  # type: ignore[method-assign,assignment]

_executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="medlb-dicom-check")
T = TypeVar("T")

DEFAULT_CALLING_AE = "MEDLB"
#: pynetdicom's own default, for a server whose AE title nobody wrote down.
DEFAULT_CALLED_AE = "ANY-SCP"


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_executor, function, *args)


def ae_titles(target: CheckTarget, config: Any) -> tuple[str, str]:
    """(calling, called): the check's own, else the service's dicom.ae_title as calling
    AE and the server's ae_title (else what clients call, the service's) as called AE."""
    calling = config.calling_ae or target.local_ae or DEFAULT_CALLING_AE
    called = config.called_ae or target.ae_title or target.local_ae or DEFAULT_CALLED_AE
    return calling, called


def budget(config: Any) -> float:
    """Each pynetdicom timeout: a little under the check's timeout."""
    return max(0.05, config.timeout * 0.9)


def set_timeouts(ae: Any, seconds: float) -> None:
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = seconds


class Opened:
    """Notes whether the TCP connection opened and whether the peer sent an A-ABORT:
    pynetdicom reports a refused connect, a peer's abort and its own timers alike, as
    an aborted association."""

    def __init__(self) -> None:
        self.opened = False
        self.peer_abort: tuple[int, int] | None = None
        self.started = time.monotonic()

    def _opened(self, event: Any) -> None:
        self.opened = True

    def _received(self, event: Any) -> None:
        if isinstance(event.pdu, A_ABORT_RQ):
            self.peer_abort = (int(event.pdu.source), int(event.pdu.reason_diagnostic))

    def handlers(self) -> list[Any]:
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_PDU_RECV, self._received)]


def not_established(assoc: Any, opened: Opened, seconds: float, called: str) -> Outcome:
    """Why the association did not come up, in words and codes, never data."""
    primitive = getattr(assoc.acceptor, "primitive", None)
    if assoc.is_rejected and primitive is not None:
        return Outcome(False, "association " + describe_rejection(
            int(primitive.result), int(primitive.result_source), int(primitive.diagnostic)))
    if not opened.opened:
        if time.monotonic() - opened.started >= seconds * 0.9:
            return Outcome(False, f"connect timed out after {seconds:g}s")
        return Outcome(False, "cannot connect (connection refused or host unreachable)")
    if opened.peer_abort is not None:
        return Outcome(False, "association " + Abort(*opened.peer_abort).describe() + " by the server")
    if primitive is not None and getattr(primitive, "result", None) == 0:
        return Outcome(False, f"{called} accepted the association but none of the proposed presentation contexts")
    return Outcome(False, f"no answer to the association request within {seconds:g}s")


def tls_args(target: CheckTarget) -> tuple[ssl.SSLContext, str] | None:
    """With the service's backend_tls, DICOM checks associate over TLS (DICOM TLS,
    usually port 2762) with the same CA, client certificate and server name."""
    context = target.ssl_context()
    return None if context is None else (context, target.server_name)


def associate(calling: str, abstract_syntax: str, host: str, port: int, called: str, seconds: float,
              tls: tuple[ssl.SSLContext, str] | None) -> Any:
    """An established pynetdicom association for one SOP class, or the Outcome that
    says why there is none (rejected with its codes, aborted, no answer)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(abstract_syntax)
    set_timeouts(ae, seconds)
    opened = Opened()
    assoc = ae.associate(host, port, ae_title=called, evt_handlers=opened.handlers(), tls_args=tls)
    if not assoc.is_established:
        return not_established(assoc, opened, seconds, called)
    return assoc
