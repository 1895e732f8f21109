"""The listening side's TLS transport, for every mode.

A small TLS layer of its own (`TlsServerProtocol`) over `ssl.SSLObject` and memory
BIOs rather than `loop.create_server(ssl=...)`: it sees the first bytes of a
connection, so a plain-HTTP request sent to a TLS port can be answered (or
redirected) instead of dropped, and it knows when and why a handshake fails, so
handshakes and failures are counted. The mode's own protocol (tcp relay, http) sits on
top of it as on any transport, with the same flow control: when the client's socket
buffer is full the mode is told to pause writing; when the mode pauses reading, the
socket stops being read.

The contexts it serves with (certificates, SNI, policies, reload) are built in
medlb/tls.py; this module only moves bytes through them.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable

from medlb.logs import get_logger
from medlb.tls import TlsTerminator

log = get_logger("medlb.tls")

TLS_RECORD_HANDSHAKE = 0x16


# --- the listening side's TLS transport --------------------------------------------------


class TlsTransport(asyncio.Transport):
    """What the mode's protocol sees: plaintext in and out of one TLS connection."""

    def __init__(self, owner: "TlsServerProtocol"):
        super().__init__()
        self._owner = owner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._owner.write_plain(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self._owner.write_plain(b"".join(chunks))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._owner.close()

    def abort(self) -> None:
        self._owner.abort()

    def is_closing(self) -> bool:
        return self._owner.closing

    def pause_reading(self) -> None:
        self._owner.app_paused = True
        if self._owner.raw is not None and not self._owner.raw.is_closing():
            self._owner.raw.pause_reading()

    def resume_reading(self) -> None:
        owner = self._owner
        owner.app_paused = False
        if owner.raw is not None and not owner.raw.is_closing():
            owner.raw.resume_reading()
            owner.flush_plain()

    def is_reading(self) -> bool:
        return not self._owner.app_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._owner.raw is not None:
            self._owner.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._owner.raw.get_write_buffer_size() if self._owner.raw is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        owner = self._owner
        if name == "ssl_object":
            return owner.sslobj
        if name == "peercert":
            return owner.sslobj.getpeercert() if owner.sslobj else default
        if name == "cipher":
            return owner.sslobj.cipher() if owner.sslobj else default
        if name == "tls":
            return True
        return owner.raw.get_extra_info(name, default) if owner.raw is not None else default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._owner.app = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._owner.app  # type: ignore[return-value]


class TlsServerProtocol(asyncio.Protocol):
    """Terminates TLS on an accepted connection, then hands plaintext to `app_factory()`.

    If the first byte is not a TLS handshake record, `plain_factory` (if given) gets the
    connection as plain bytes, with `plain_on_tls=True` on the protocol it returns;
    otherwise the connection is closed and counted as a failure.
    """

    def __init__(self, terminator: TlsTerminator, app_factory: Callable[[], asyncio.Protocol],
                 plain_factory: Callable[[], asyncio.Protocol] | None = None,
                 handshake_timeout: float = 10.0):
        self.terminator = terminator
        self.app_factory = app_factory
        self.plain_factory = plain_factory
        self.handshake_timeout = handshake_timeout
        self.raw: asyncio.Transport | None = None
        self.app: asyncio.Protocol | None = None
        self.sslobj: ssl.SSLObject | None = None
        self.incoming: ssl.MemoryBIO | None = None
        self.outgoing: ssl.MemoryBIO | None = None
        self.transport = TlsTransport(self)
        self.handshaken = False
        self.closing = False
        self.app_paused = False
        self.plain = False
        self.eof = False
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False

    # raw side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self.handshake_timeout, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        if not self.handshaken and not self.plain:
            self.terminator.stats.fail("timeout")
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self.plain:
            self.app.data_received(data)  # type: ignore[union-attr]
            return
        if self.sslobj is None:
            if data[0] != TLS_RECORD_HANDSHAKE:
                self._not_tls(data)
                return
            self.sslobj, self.incoming, self.outgoing = self.terminator.new_sslobject()
        self.incoming.write(data)  # type: ignore[union-attr]
        if not self.handshaken:
            self._do_handshake()
            if not self.handshaken:
                return
        self.flush_plain()

    def _not_tls(self, data: bytes) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.plain_factory is None:
            self.terminator.stats.fail("not_tls")
            self.abort()
            return
        self.terminator.stats.fail("plain_http")
        self.plain = True
        self.app = self.plain_factory()
        setattr(self.app, "plain_on_tls", True)
        self.app.connection_made(self.raw)  # type: ignore[arg-type]
        self.raw.set_protocol(self.app)  # type: ignore[union-attr]
        self.app.data_received(data)

    def _do_handshake(self) -> None:
        assert self.sslobj is not None
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._send_outgoing()
            return
        except (ssl.SSLError, OSError) as exc:
            self._send_outgoing()
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            self.terminator.stats.fail(str(reason).lower())
            log.debug("tls_handshake_failed", reason=str(reason), peer=str(self.raw.get_extra_info("peername")))
            self.abort()
            return
        self._send_outgoing()
        self.handshaken = True
        self.terminator.stats.handshakes += 1
        if self._timer is not None:
            self._timer.cancel()
        self.app = self.app_factory()
        self.app.connection_made(self.transport)

    def flush_plain(self) -> None:
        """Decrypt what has arrived and hand it up, unless the mode paused reading."""
        if not self.handshaken or self.sslobj is None or self._lost:
            return
        eof = False
        while not self.app_paused and not self._lost:
            try:
                chunk = self.sslobj.read(262144)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except (ssl.SSLError, OSError):
                self.abort()
                return
            if not chunk:
                eof = True
                break
            if self.app is not None:
                self.app.data_received(chunk)
        self._send_outgoing()  # session tickets, key updates
        if eof and not self.eof:
            self.eof = True
            if self.app is not None and not self.app.eof_received():
                self.close()

    def _send_outgoing(self) -> None:
        if self.outgoing is not None and self.outgoing.pending and self.raw is not None and not self.raw.is_closing():
            self.raw.write(self.outgoing.read())

    def eof_received(self) -> bool | None:
        if self.plain:
            return self.app.eof_received()  # type: ignore[union-attr]
        if not self.handshaken:
            self.terminator.stats.fail("closed_in_handshake")
            return False
        if not self.eof:
            self.eof = True
            if self.app is not None and self.app.eof_received():
                return True
        return False

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self.app is not None:
            self.app.connection_lost(exc)

    # app side
    def write_plain(self, data: bytes) -> None:
        if self.closing or self.sslobj is None:
            return
        view = memoryview(data)
        while view:
            try:
                written = self.sslobj.write(view[:262144])
            except ssl.SSLError:
                self.abort()
                return
            view = view[written:]
        self._send_outgoing()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.sslobj is not None and self.handshaken:
            try:
                self.sslobj.unwrap()
            except (ssl.SSLError, OSError):
                pass
            self._send_outgoing()
        if self.raw is not None:
            self.raw.close()

    def abort(self) -> None:
        self.closing = True
        if self.raw is not None:
            self.raw.abort()
