"""`dicom` mode: read the A-ASSOCIATE-RQ, route it by AE title, then relay bytes.

One TCP connection carries one association (PS3.8 §9.1.1), so each connection goes
through these phases:

1. request: read the first PDU, bounded by limits.associate_timeout (the ARTIM timer)
   and limits.max_associate_size. Anything but an A-ASSOCIATE-RQ gets an A-ABORT.
2. negotiating: route (allowed_calling_aes, routes, unrouted), pick a server, send it
   the request with its called AE rewritten to the server's `ae_title`, and read its
   answer before the client sees a byte. A connect failure, a transient reject, an
   abort or silence moves on to the next server, invisibly to the client. The client
   gets the server's A-ASSOCIATE-AC with its own called AE restored, or a permanent
   reject as the server sent it, or RJ 2,3,1 when no server took it.
3. relaying: the tcp relay, unchanged, plus a PDU boundary tracker per direction (a
   subtraction per chunk; nothing is buffered, a P-DATA-TF may be gigabytes). When a
   peer goes away before the association was released or aborted, the other side
   gets an A-ABORT, at once, rather than a bare close or a hang.
4. closing: after medlb answers with an RJ or A-ABORT it half-closes and waits (ARTIM)
   for the client to close, as PS3.8's Sta13 does, so the client reads the answer
   rather than a reset.

Nothing of a data set is ever parsed or logged; logs and metrics carry AE titles,
reason codes, counts and the client's address.
"""

from __future__ import annotations

import asyncio

from medlb.logs import get_logger
from medlb.protocols import dicom as pdu
from medlb.protocols.dicom import Association, AssociateRequest, Phase, ProtocolError, PduReader, PduTooLarge
from medlb.proxy.tcp import ServiceHandle, TcpClient, _Upstream
from medlb.runtime import Server
from medlb.runtime.dicom import AeCount
from medlb.tasks import spawn

log = get_logger("medlb.proxy")

_ANSWERS = frozenset({pdu.A_ASSOCIATE_AC, pdu.A_ASSOCIATE_RJ, pdu.A_ABORT})
#: Rejections that are the operator's policy, logged at info; the rest (scanners,
#: garbage, silence) at debug so a port scan cannot fill the log.
_POLICY = frozenset({"calling-ae-invalid", "called-ae-invalid", "calling-ae-not-allowed", "called-ae-not-routed",
                     "protocol-version", "no-server", "max-connections", "server-rejected"})


class _DicomUpstream(_Upstream):
    """The server side. Until the association is accepted its bytes are the answer to
    the request, collected here; once linked to the client it relays like the tcp
    upstream, feeding the client-bound PDU tracker."""

    __slots__ = ("reader", "answer", "linked", "held", "eof", "lost")

    def __init__(self, client: "DicomClient", server: Server):
        super().__init__(client, server)
        limits = client.service.config.limits
        self.reader = PduReader(limits.max_associate_size, _ANSWERS)
        #: (answer PDU, bytes after it), or why there is no answer.
        self.answer: asyncio.Future[tuple[bytes, bytes] | str] = asyncio.get_running_loop().create_future()
        self.linked = False
        self.held: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Linked into the client only once this server accepted the association.
        self.transport = transport  # type: ignore[assignment]

    def _fail(self, why: str) -> None:
        if not self.answer.done():
            self.answer.set_result(why)

    def data_received(self, data: bytes) -> None:
        if self.linked:
            client: DicomClient = self.client  # type: ignore[assignment]
            client.down.feed(data)
            client.transport.write(data)
            client.bytes_down += len(data)
            self.server.bytes_to_client += len(data)
            return
        if self.answer.done():
            # After the answer, before the client is linked (a read may slip past
            # pause_reading): held for the client, in order.
            self.held.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        try:
            answer = self.reader.feed(data)
        except ProtocolError as exc:
            self._fail(f"answered with a bad PDU: {exc}")
            return
        if answer is not None:
            self.answer.set_result((answer, self.reader.rest))
            if self.transport is not None:
                self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.linked:
            return self.client.upstream_eof()
        self._fail("closed the connection without answering")
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.linked:
            self.client.upstream_lost(exc)
            return
        self._fail("connection lost before answering")
        self.lost = (exc,)


def _classify(answer: tuple[bytes, bytes] | str) -> tuple[str, str]:
    """A server's answer to the request: `accepted`, `rejected` (permanently: relay it)
    or `failed` (try the next server), with why, for the log."""
    if isinstance(answer, str):
        return "failed", answer
    first = answer[0]
    try:
        if first[0] == pdu.A_ASSOCIATE_AC:
            if len(first) < pdu.ITEMS_START:
                return "failed", "answered with an A-ASSOCIATE-AC shorter than 74 bytes"
            return "accepted", ""
        if first[0] == pdu.A_ASSOCIATE_RJ:
            rejection = pdu.parse_associate_rj(first)
            return ("failed" if rejection.transient else "rejected"), rejection.describe()
        return "failed", pdu.parse_abort(first).describe()
    except ProtocolError as exc:
        return "failed", f"answered with a bad PDU: {exc}"


class DicomClient(TcpClient):
    """One client connection of a dicom service."""

    upstream_class = _DicomUpstream

    def __init__(self, handle: ServiceHandle, local_port: int):
        super().__init__(handle, local_port)
        limits = self.service.config.limits
        #: The phase (protocols/dicom.py's transition table) and both PDU streams.
        self.association = Association()
        self.reader = PduReader(limits.max_associate_size, frozenset({pdu.A_ASSOCIATE_RQ}))
        self.up = self.association.up  # client -> server, once relaying
        self.down = self.association.down  # server -> client
        self.request: AssociateRequest | None = None
        self.refusing = False
        self.first_type: int | None = None
        self.received = 0
        self._pending: _DicomUpstream | None = None
        self._artim: asyncio.TimerHandle | None = None
        self._slots: tuple[AeCount, AeCount] | None = None
        self._started = 0.0

    # --- phase 1: the request ---------------------------------------------------------

    def refuse(self) -> None:
        """Over max_connections: read the request (keeping none of it) and answer 2,3,2,
        local limit exceeded, as a DICOM client expects, rather than dropping TCP."""
        self.refusing = True
        self._start_artim()

    def begin(self) -> None:
        self._start_artim()

    def _start_artim(self) -> None:
        loop = asyncio.get_running_loop()
        self._artim = loop.call_later(self.service.config.limits.associate_timeout, self._artim_expired)

    def _stop_artim(self) -> None:
        if self._artim is not None:
            self._artim.cancel()
            self._artim = None

    def _artim_expired(self) -> None:
        self._artim = None
        if self.association.phase is Phase.REQUEST:
            self._count_reject("artim-timeout")
        self.closed = True
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        phase = self.association.phase
        if phase is Phase.RELAYING:
            upstream = self.upstream
            self.up.feed(data)
            upstream.transport.write(data)  # type: ignore[union-attr]
            self.bytes_up += len(data)
            self.server.bytes_to_server += len(data)  # type: ignore[union-attr]
        elif phase is Phase.REQUEST:
            self._request_data(data)
        elif phase is Phase.NEGOTIATING:
            # Nothing is due before the answer; uvloop may deliver one read after
            # pause_reading(): hold it (one read at most) for the server.
            self.early += data
            self.up.feed(data)
            self.transport.pause_reading()
        # CLOSING: the client's bytes after an RJ or A-ABORT are read and dropped.

    def _request_data(self, data: bytes) -> None:
        if not data:
            return
        if self.first_type is None:
            self.first_type = data[0]
        self.received += len(data)
        if self.refusing:
            # Follow the first PDU to its end without keeping it, then answer.
            stream = self.up
            stream.feed(data)
            if self.first_type != pdu.A_ASSOCIATE_RQ:
                self._end(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, pdu.ABORT_UNEXPECTED_PDU), "not-associate-rq")
            elif stream.pdus > 1 or (stream.pdus == 1 and stream.at_boundary):
                self._end(pdu.associate_rj(*pdu.RJ_LOCAL_LIMIT), "max-connections")
            return
        try:
            request_pdu = self.reader.feed(data)
        except PduTooLarge as exc:
            self._end(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, exc.abort_reason), "oversized")
            return
        except ProtocolError as exc:
            reason = "not-associate-rq" if exc.abort_reason in (pdu.ABORT_UNRECOGNISED_PDU,
                                                               pdu.ABORT_UNEXPECTED_PDU) else "malformed"
            self._end(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, exc.abort_reason), reason)
            return
        if request_pdu is None:
            return
        self._stop_artim()
        self.transport.pause_reading()
        if self.reader.rest:
            self.early += self.reader.rest
            self.up.feed(self.reader.rest)
        try:
            request = pdu.parse_associate_rq(request_pdu)
        except ProtocolError as exc:
            self._end(pdu.a_abort(pdu.ABORT_SOURCE_PROVIDER, exc.abort_reason), "malformed")
            return
        self.request = request
        if not request.protocol_version & 1:
            self._end(pdu.associate_rj(*pdu.RJ_PROTOCOL_VERSION), "protocol-version")
            return
        route = self.service.router.decide(request)  # type: ignore[union-attr]
        if route.pool is None:
            assert route.reject is not None
            self._end(pdu.associate_rj(*route.reject), route.reason)
            return
        self.association.move(Phase.NEGOTIATING)
        spawn(self._negotiate(request_pdu, request, route.pool))

    # --- phase 2: choosing a server ---------------------------------------------------

    async def _negotiate(self, request_pdu: bytes, request: AssociateRequest, pool: str) -> None:
        try:
            await self._try_servers(request_pdu, request, pool)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not leave a client waiting without an answer
            log.error("association_setup_failed", exc_info=True, service=self.service.name)
            if self.association.phase is Phase.NEGOTIATING:
                self._end(pdu.associate_rj(*pdu.RJ_CONGESTION), "no-server")

    async def _try_servers(self, request_pdu: bytes, request: AssociateRequest, pool: str) -> None:
        service = self.service
        limits = service.config.limits
        async for server, transport in self._servers(pool):
            if self.closed:  # the client left while medlb was connecting
                server.active -= 1
                transport.close()
                return
            upstream: _DicomUpstream = transport.get_protocol()  # type: ignore[assignment]
            self._pending = upstream
            outgoing = pdu.rewrite_called_ae(request_pdu, server.ae_title) if server.ae_title else request_pdu
            transport.write(outgoing)
            try:
                answer = await asyncio.wait_for(upstream.answer, limits.associate_timeout)
            except asyncio.TimeoutError:
                answer = f"no answer within {limits.associate_timeout:g}s"
            except asyncio.CancelledError:
                server.active -= 1
                transport.abort()
                raise
            self._pending = None
            verdict, why = _classify(answer)
            if self.closed:  # the client left while the server was deciding
                server.active -= 1
                if verdict == "accepted":
                    transport.write(pdu.a_abort())
                transport.close()
                return
            if verdict == "accepted":
                assert isinstance(answer, tuple)
                self._accepted(server, transport, upstream, request_pdu, outgoing, *answer)
                return
            server.active -= 1
            transport.close()
            if verdict == "rejected":
                # The server's own verdict on this request: relayed as it is.
                assert isinstance(answer, tuple)
                self._end(answer[0], "server-rejected", server=server.name)
                return
            server.connect_failures += 1
            log.debug("association_retry", service=service.name, server=server.name, why=why)
        if self.closed:
            return
        service.no_server += 1
        self._end(pdu.associate_rj(*pdu.RJ_CONGESTION), "no-server")

    def _accepted(self, server: Server, transport: asyncio.Transport, upstream: _DicomUpstream,
                  request_pdu: bytes, outgoing: bytes, accept: bytes, rest: bytes) -> None:
        """The server accepted: give the client the AC with its own called AE, then relay."""
        service = self.service
        request = self.request
        assert request is not None and service.dicom is not None
        if server.ae_title:
            accept = pdu.replace_called_ae(accept, request_pdu[pdu.CALLED_AE])
        self.upstream, self.server = upstream, server
        server.total += 1
        self.bytes_up += len(outgoing)
        server.bytes_to_server += len(outgoing)
        reply = accept + rest + b"".join(upstream.held)
        upstream.held.clear()
        upstream.linked = True
        self.down.feed(reply)
        self.transport.write(reply)
        self.bytes_down += len(reply)
        server.bytes_to_client += len(reply)
        self._slots = service.dicom.opened(request.calling_ae, request.called_ae)
        self._started = asyncio.get_running_loop().time()
        self.association.move(Phase.RELAYING)
        log.debug("association_accepted", service=service.name, server=server.name, pool=server.pool,
                  calling_ae=request.calling_ae, called_ae=request.called_ae)
        self._relay(transport)
        if upstream.lost is not None:
            self.upstream_lost(upstream.lost[0])
        elif upstream.eof:
            self.upstream_eof()
        else:
            transport.resume_reading()

    # --- phase 4: answering and closing -----------------------------------------------

    def _count_reject(self, reason: str, **extra: str) -> None:
        """Count and log a refused association: AE titles, codes and the client's address."""
        request = self.request
        self.service.dicom.reject(reason, request.calling_ae if request else "",  # type: ignore[union-attr]
                                  request.called_ae if request else "")
        fields = {"service": self.service.name, "reason": reason, "client": self.client_ip}
        if request is not None:
            fields.update(calling_ae=request.calling_ae, called_ae=request.called_ae)
        fields.update(extra)
        (log.event if reason in _POLICY else log.debug)("association_rejected", **fields)

    def _end(self, answer: bytes, reason: str, **extra: str) -> None:
        """Send an RJ or A-ABORT, half-close, and wait (ARTIM) for the client to close."""
        kind = "A-ASSOCIATE-RJ" if answer[0] == pdu.A_ASSOCIATE_RJ else "A-ABORT"
        codes = f"{answer[7]},{answer[8]},{answer[9]}" if kind == "A-ASSOCIATE-RJ" else f"{answer[8]},{answer[9]}"
        self._count_reject(reason, answer=f"{kind} {codes}", **extra)
        self.association.move(Phase.CLOSING)
        self._stop_artim()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(answer)
        self.bytes_down += len(answer)
        if transport.can_write_eof():
            transport.write_eof()
            self.association.eof_to_client = True
        transport.resume_reading()
        self._start_artim()

    # --- phase 3: relaying, and its ends ------------------------------------------------

    @property
    def over(self) -> bool:
        """Released, being released, or aborted: either side may now close."""
        return self.association.over

    def eof_received(self) -> bool:
        self.client_eof = True
        phase = self.association.phase
        if phase is Phase.REQUEST:
            if self.received:
                self._count_reject("malformed")  # a partial PDU, then silence
            self._stop_artim()
            self.closed = True
            return False
        if phase is not Phase.RELAYING:
            self.closed = True
            if self._pending is not None and self._pending.transport is not None:
                self._pending.transport.abort()
            return False
        upstream = self.upstream
        assert upstream is not None and upstream.transport is not None
        if not self.over:
            self._abort_association("client closed the connection mid-association", towards_server=True)
            return True
        if self.server_eof:
            self.close()
        elif upstream.transport.can_write_eof():
            upstream.transport.write_eof()
            self.association.eof_to_server = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_artim()
        if self.association.open and not self.closed:
            self._abort_association("client connection lost mid-association", towards_server=True)
        elif self._pending is not None and self._pending.transport is not None:
            self._pending.transport.abort()
        super().connection_lost(exc)

    def upstream_eof(self) -> bool:
        self.server_eof = True
        if not self.over:
            self._abort_association("server closed the connection mid-association", towards_server=False)
            return True
        if self.client_eof:
            self.close()
        elif self.transport.can_write_eof():
            self.transport.write_eof()
            self.association.eof_to_client = True
        return True

    def upstream_lost(self, exc: Exception | None) -> None:
        if not self.over and not self.closed:
            self._abort_association("server connection lost mid-association", towards_server=False)
        super().upstream_lost(exc)

    def _abort_association(self, why: str, towards_server: bool) -> None:
        """One side went away mid-association: the other gets an A-ABORT (service
        provider), if it is between two PDUs and can still be written to, then both close."""
        self.closed = True
        upstream = self.upstream
        target = (upstream.transport if upstream is not None else None) if towards_server else self.transport
        if target is not None and self.association.abort_fits(towards_server) and not target.is_closing():
            target.write(pdu.a_abort())
            self.association.aborted()  # the association is over now
        server = self.server
        request = self.request
        log.warning("association_aborted", service=self.service.name,
                    server=server.name if server is not None else "", why=why,
                    calling_ae=request.calling_ae if request else "", called_ae=request.called_ae if request else "")
        if self.service.dicom is not None:
            self.service.dicom.abort("client-gone" if towards_server else "server-gone")
        if upstream is not None and upstream.transport is not None and not upstream.transport.is_closing():
            upstream.transport.close()
        if not self.transport.is_closing():
            self.transport.close()

    def close(self) -> None:
        """Close both sides; an association still open is aborted towards both (idle timeout)."""
        if self.association.open and not self.closed:
            self._abort_both()
        super().close()

    def abort(self) -> None:
        """At once (halt with on_halt: close, or the stop timeout): an A-ABORT where it fits
        without waiting (between PDUs, nothing queued), a reset elsewhere."""
        if self.association.open and not self.closed:
            sent = self._abort_both(only_if_idle=True)
            self.closed = True
            upstream = self.upstream
            for transport, ok in ((self.transport, sent[0]), (upstream.transport if upstream else None, sent[1])):
                if transport is not None and not transport.is_closing():
                    transport.close() if ok else transport.abort()
            return
        self._stop_artim()
        if self._pending is not None and self._pending.transport is not None:
            self._pending.transport.abort()
        super().abort()

    def _abort_both(self, only_if_idle: bool = False) -> tuple[bool, bool]:
        sent = [False, False]
        upstream = self.upstream
        association = self.association
        for index, transport in enumerate((self.transport, upstream.transport if upstream is not None else None)):
            if transport is None or transport.is_closing() or not association.abort_fits(towards_server=index == 1):
                continue
            if only_if_idle and transport.get_write_buffer_size():
                continue
            transport.write(pdu.a_abort())
            sent[index] = True
        if self.service.dicom is not None:
            self.service.dicom.abort("medlb")
        association.aborted()
        return sent[0], sent[1]

    def _release(self) -> None:
        if self.counted and self._slots is not None and self.service.dicom is not None:
            self.service.dicom.closed(self._slots, asyncio.get_running_loop().time() - self._started)
            self._slots = None
        self._stop_artim()
        super()._release()
