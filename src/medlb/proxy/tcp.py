"""`tcp` mode: a layer 7 relay (source NAT) from each client connection to one server.

Built on asyncio Protocols rather than streams: bytes go from `data_received` straight
into the other transport's `write`, with no task and no copy per chunk. Backpressure
is the transports' own flow control: when one side's write buffer passes
`limits.buffer_size`, the other side stops reading until it drains, so a slow reader
never makes medlb hold more than about one buffer per direction.

Protocol modes (dicom) subclass TcpClient: they replace what happens between accept
and relaying (`refuse`, `begin`) and reuse `_open` (connect to one server, counted)
and `_relay` (start copying bytes); the copying itself stays this module's.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator

from medlb.dataplane import Connections
from medlb.logs import get_logger
from medlb.runtime import Runtime, Server, Service
from medlb.tasks import spawn

if TYPE_CHECKING:
    from medlb.proxy.http import ServerPools
    from medlb.proxy.mllp import Dispatcher
    from medlb.tls import TlsTerminator

log = get_logger("medlb.proxy")


@dataclass(eq=False)
class ServiceHandle:
    """What a listener's connections need; `service` is swapped in place on reload so
    new connections see the new config while established ones keep theirs. The parts
    of one mode are made by its first connection and kept across reloads."""

    service: Service
    #: The model the mode's parts follow (the MLLP dispatcher subscribes to it).
    runtime: Runtime
    #: The registry of established connections, shared by every service of the data
    #: plane: a connection adds itself once admitted and removes itself when released.
    connections: Connections
    #: TLS termination (the service's `tls:`), swapped in place on reload.
    tls: TlsTerminator | None = None
    #: Re-encryption to servers (the service's `backend_tls:`): a client SSLContext.
    backend_ssl: ssl.SSLContext | None = None
    backend_server_name: str | None = None
    #: mode http: idle keep-alive connections to the servers.
    http_pools: ServerPools | None = None
    #: mode mllp (balance: message): the queues and links every sender shares.
    dispatcher: Dispatcher | None = None

    def reloaded(self) -> None:
        """`service` is the new config's: let go of what only the old one used."""
        if self.http_pools is not None:
            self.http_pools.keep_only(set(self.service.servers()))

    def removed(self) -> None:
        """A reload removed the service; connections still open are served to the end."""
        if self.dispatcher is not None:
            self.dispatcher.detach()

    def stopped(self) -> None:
        """medlb stops and every connection has ended or been aborted."""
        if self.dispatcher is not None:
            self.dispatcher.close_all()


def admit(service: Service) -> bool:
    """Count a new client connection, or count it as refused at max_connections (the
    caller then refuses it the way its protocol does: a close, or a DICOM reject)."""
    if service.cluster_active >= service.config.limits.max_connections:
        service.refused += 1
        return False
    service.active += 1
    service.total += 1
    return True


def _keepalive(transport: asyncio.BaseTransport) -> None:
    """TCP keepalive on a connection medlb opened to a server. (Accepted client
    connections inherit it from the listening socket: see listeners.bound_socket.)"""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError:
            pass


class _Upstream(asyncio.Protocol):
    """The server side of one relayed connection; all decisions live in TcpClient."""

    __slots__ = ("client", "server", "transport")

    def __init__(self, client: "TcpClient", server: Server):
        self.client = client
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The server may speak first (a greeting) before the connecting task resumes,
        # so the client is linked here rather than after create_connection returns;
        # unless the client was already released (it left while medlb was connecting):
        # then the connecting task gives the server its count back.
        self.transport = transport  # type: ignore[assignment]
        client = self.client
        if client.counted:
            client.upstream, client.server = self, self.server

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.transport.write(data)
        client.bytes_down += len(data)
        self.server.bytes_to_client += len(data)

    def eof_received(self) -> bool:
        return self.client.upstream_eof()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        client = self.client
        if not client.transport.is_closing():
            client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost(exc)


class TcpClient(asyncio.Protocol):
    """One client connection: picks a server, connects (with retries), then relays."""

    #: The protocol of the server side; subclasses may hook the server's first bytes.
    upstream_class: type[_Upstream] = _Upstream

    # One of these lives per open connection: slots keep thousands of idle ones small.
    __slots__ = ("handle", "service", "local_port", "transport", "upstream", "server", "client_ip", "bytes_up",
                 "bytes_down", "client_eof", "server_eof", "closed", "counted", "early", "_idle_mark",
                 "_idle_since", "__weakref__")

    def __init__(self, handle: ServiceHandle, local_port: int):
        self.handle = handle
        self.service = handle.service
        self.local_port = local_port
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.upstream: _Upstream | None = None
        self.server: Server | None = None
        self.client_ip = ""
        self.bytes_up = 0
        self.bytes_down = 0
        self.client_eof = False
        self.server_eof = False
        self.closed = False
        self.counted = False
        self.early = b""  # what a client sent before its server was connected (one read)
        self._idle_mark = -1  # -1: not relaying yet (connect_timeout applies, not idle_timeout)
        self._idle_since = 0.0

    # --- client side --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        service = self.service
        limits = service.config.limits
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        if not admit(service):
            self.refuse()
            return
        self.counted = True
        self.transport.set_write_buffer_limits(high=limits.buffer_size)
        self.handle.connections.add(self)
        self.begin()

    def refuse(self) -> None:
        """Over max_connections (already counted as refused): close at once."""
        self.closed = True
        self.transport.close()

    def begin(self) -> None:
        """A counted connection starts: nothing is read until a server is connected."""
        self.transport.pause_reading()
        spawn(self._connect())

    async def _servers(self, pool: str = "default") -> AsyncIterator[tuple[Server, asyncio.Transport]]:
        """Connected servers to try, in the scheduler's order: the next one is picked
        only if the caller asks (the last was refused), never one twice, at most
        1 + connect_retries attempts. Stops as soon as the client has gone."""
        tried: set[Server] = set()
        for _ in range(1 + self.service.config.limits.connect_retries):
            if self.closed:
                return
            server = self.service.pick(self.client_ip, tried, pool_name=pool)
            if server is None:
                return
            tried.add(server)
            transport = await self._open(server)
            if transport is not None:
                yield server, transport

    async def _connect(self) -> None:
        service = self.service
        async for server, transport in self._servers():
            server.total += 1
            if self.closed:  # the client left while we were connecting
                transport.close()
                if self.server is server:
                    self._release()  # counts the server down with the client (if not done yet)
                else:
                    server.active -= 1  # released before the connect completed, without the server
                return
            self._relay(transport)
            return
        if self.closed:
            return
        service.no_server += 1
        log.debug("no_server", service=service.name)
        self.close()

    async def _open(self, server: Server) -> asyncio.Transport | None:
        """Connect to one server, counted in its `active`; None (and a connect failure
        counted) if it refuses or does not answer within connect_timeout."""
        limits = self.service.config.limits
        loop = asyncio.get_running_loop()
        server.active += 1
        host, port = server.address_for(self.local_port)
        backend_ssl = self.handle.backend_ssl  # backend_tls: re-encrypt to the server
        try:
            async with asyncio.timeout(limits.connect_timeout):  # no extra task, unlike wait_for
                transport, _ = await loop.create_connection(
                    lambda: self.upstream_class(self, server), host, port, ssl=backend_ssl,
                    server_hostname=(self.handle.backend_server_name or host) if backend_ssl is not None else None)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            server.active -= 1
            server.connect_failures += 1
            log.debug("connect_failed", service=self.service.name, server=server.name,
                      reason="timeout" if isinstance(exc, asyncio.TimeoutError) else str(exc))
            return None
        except asyncio.CancelledError:
            server.active -= 1
            raise
        return transport  # type: ignore[return-value]

    def _relay(self, transport: asyncio.Transport) -> None:
        """Connected: pass on what the client sent early, then let bytes flow both ways."""
        server = self.server
        assert server is not None
        _keepalive(transport)
        transport.set_write_buffer_limits(high=self.service.config.limits.buffer_size)
        if self.early:
            early, self.early = self.early, b""
            transport.write(early)
            self.bytes_up += len(early)
            server.bytes_to_server += len(early)
        if self.client_eof and transport.can_write_eof():
            transport.write_eof()
        else:
            self.transport.resume_reading()
        self._idle_mark, self._idle_since = self.bytes_up + self.bytes_down, asyncio.get_running_loop().time()

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None or self.early:
            # Not connected yet. uvloop may deliver one read despite pause_reading() in
            # connection_made; hold it (one read at most) and pause again.
            self.early += data
            self.transport.pause_reading()
            return
        upstream.transport.write(data)
        self.bytes_up += len(data)
        self.server.bytes_to_server += len(data)  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.client_eof = True
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            if self.server_eof:
                self.close()
                return True
            if upstream.transport.can_write_eof():
                upstream.transport.write_eof()
        return True  # keep our write side open for the server's remaining bytes

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.transport.is_closing():
            upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.transport.is_closing():
            # A reset client resets the server too; a clean close lets queued bytes go.
            upstream.transport.abort() if exc is not None else upstream.transport.close()
        self._release()

    # --- server side events -----------------------------------------------------------

    def upstream_eof(self) -> bool:
        self.server_eof = True
        if self.client_eof:
            self.close()
        elif self.transport.can_write_eof():
            self.transport.write_eof()
        return True

    def upstream_lost(self, exc: Exception | None) -> None:
        if not self.transport.is_closing():
            self.transport.abort() if exc is not None else self.transport.close()
        self._release()

    # --- shared -------------------------------------------------------------------------

    def close(self) -> None:
        """Close both sides, letting buffered bytes drain."""
        self.closed = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
        if not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """medlb is stopping: a byte relay has no message boundary to stop at, so it
        runs until its peers end it or the stop timeout aborts it."""

    def abort(self) -> None:
        """Close both sides at once (halt with on_halt: close, or stop timeout)."""
        self.closed = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.abort()
        self.transport.abort()

    def _release(self) -> None:
        if not self.counted:
            return
        self.counted = False
        self.service.active -= 1
        if self.server is not None:
            self.server.active -= 1
            sticky = self.service.sticky
            if sticky is not None:
                # Persistence runs from the end of the client's last connection.
                sticky.put(self.service.persistence_key(self.client_ip), self.server.name, time.monotonic())
        self.handle.connections.discard(self)

    def idle_check(self, now: float) -> None:
        """Called by the listeners' sweep (Listeners._sweep): close after idle_timeout
        with no byte either way."""
        if self._idle_mark < 0 or self.closed:
            return
        moved = self.bytes_up + self.bytes_down
        if moved != self._idle_mark:
            self._idle_mark, self._idle_since = moved, now
        elif now - self._idle_since >= self.service.config.limits.idle_timeout:
            log.debug("idle_timeout", service=self.service.name)
            self.close()
