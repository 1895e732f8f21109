"""Listen sockets for every service, kept in step with the config across reloads.

A reload binds the new addresses first and gives up, changing nothing, if any of them
cannot be bound; only then are services swapped and old addresses closed. Closing a
listener never touches established connections.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path

from medlb.config.units import HostPort
from medlb.logs import get_logger
from medlb.proxy.dicom import DicomClient
from medlb.proxy.http import http_factory
from medlb.proxy.mllp import mllp_factory
from medlb.proxy.tcp import ServiceHandle, TcpClient
from medlb.proxy.tls import TlsServerProtocol, TlsSetupError, TlsTerminator, client_context
from medlb.runtime import Change, Runtime

log = get_logger("medlb.proxy")

#: Protocol factories per mode, called with (handle, local_port).
PROTOCOLS: dict[str, Callable[[ServiceHandle, int], asyncio.Protocol]] = {
    "tcp": TcpClient, "dicom": DicomClient, "mllp": mllp_factory, "http": http_factory}


class BindError(Exception):
    @classmethod
    def cannot_listen(cls, name: str, address: HostPort, exc: OSError) -> "BindError":
        """The operator's words for a failed bind, wherever the socket is bound."""
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        return cls(f"service {name!r} cannot listen on {address}: {why}")


class Listeners:
    def __init__(self, runtime: Runtime, backlog: int = 1024):
        self.runtime = runtime
        self.backlog = backlog
        self.handles: dict[str, ServiceHandle] = {}
        self.servers: dict[tuple[str, HostPort], asyncio.AbstractServer] = {}
        self.connections: set[TcpClient] = set()
        #: Relative certificate paths are taken from here (the config file's folder).
        self.base_dir: Path | None = None
        #: In a worker process: the addresses this process serves (None: every one) and
        #: the listen sockets the control process bound for them, not yet in use.
        self.assigned: set[tuple[str, HostPort]] | None = None
        self.provided: dict[tuple[str, HostPort], socket.socket] = {}
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_every = 1.0
        runtime.subscribe(self._on_changes)

    async def _bind(self, name: str, address: HostPort, handle: ServiceHandle) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        factory = PROTOCOLS[handle.service.mode]
        port = address.port
        assert port is not None
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        plain_fallback = handle.service.mode == "http"

        def accept() -> asyncio.Protocol:
            terminator = handle.tls
            if terminator is None:
                return factory(handle, port)
            return TlsServerProtocol(terminator, lambda: factory(handle, port),
                                     (lambda: factory(handle, port)) if plain_fallback else None,
                                     handshake_timeout=handle.service.config.limits.connect_timeout * 3)

        sock = self.provided.pop((name, address), None)
        if sock is not None:
            return await loop.create_server(accept, sock=sock, backlog=self.backlog)
        try:
            return await loop.create_server(accept, address.host, port,
                                            family=family, backlog=self.backlog, reuse_address=True)
        except OSError as exc:
            raise BindError.cannot_listen(name, address, exc) from None

    async def sync(self) -> None:
        """Make the listen sockets match runtime.services; raise BindError and change
        nothing if a new address cannot be bound."""
        wanted = {(name, address) for name, service in self.runtime.services.items()
                  for address in service.config.addresses}
        if self.assigned is not None:
            wanted &= self.assigned
        new_handles = {name: self.handles.get(name) or ServiceHandle(service, self)
                       for name, service in self.runtime.services.items()}
        tls = self._tls_setup()
        to_open = sorted(wanted - set(self.servers), key=str)
        to_close = set(self.servers) - wanted
        # Close addresses that move between services first, so they can be bound again.
        moving = {key for key in to_close if any(key[1] == address for _, address in to_open)}
        for key in moving:
            self._close(key)
        opened: dict[tuple[str, HostPort], asyncio.AbstractServer] = {}
        try:
            for name, address in to_open:
                opened[(name, address)] = await self._bind(name, address, new_handles[name])
        except BindError:
            for server in opened.values():
                server.close()
            raise
        for name, handle in new_handles.items():
            handle.service = self.runtime.services[name]
            terminator, backend, server_name = tls[name]
            if terminator is not None and handle.tls is not None:
                handle.tls.adopt(terminator)
            else:
                handle.tls = terminator
            handle.backend_ssl, handle.backend_server_name = backend, server_name
            handle.service.tls = handle.tls
            pools = getattr(handle, "http_pools", None)
            if pools is not None:
                pools.keep_only(set(handle.service.servers()))
        for name in self.handles.keys() - new_handles.keys():
            dispatcher = getattr(self.handles[name], "dispatcher", None)
            if dispatcher is not None:
                dispatcher.detach()  # the service is gone; senders still connected finish
        self.handles = new_handles
        for key in to_close - moving:
            self._close(key)
        self.servers.update(opened)
        for name, address in to_open:
            log.event("listening", service=name, address=str(address), mode=self.runtime.services[name].mode)
        timeouts = [service.config.limits.idle_timeout for service in self.runtime.services.values()]
        self._sweep_every = min(30.0, max(0.05, min(timeouts, default=3600.0) / 8))
        if self._sweep_handle is None:
            self._sweep_handle = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past their service's idle_timeout.

        One timer for every connection rather than one each: the data path only counts
        bytes or messages, and a sweep every 1/8 of the shortest timeout (at most 30 s)
        compares the counts with the last sweep's. An idle connection closes between
        its timeout and one sweep later.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in list(self.connections):
            check = getattr(connection, "idle_check", None)
            if check is not None:
                check(now)
        self._sweep_handle = loop.call_later(self._sweep_every, self._sweep)

    def _tls_setup(self) -> dict[str, tuple[TlsTerminator | None, object, str | None]]:
        return tls_setup(self.runtime, self.base_dir)

    def _close(self, key: tuple[str, HostPort]) -> None:
        server = self.servers.pop(key)
        server.close()
        log.event("listener_closed", service=key[0], address=str(key[1]))

    def close_all(self) -> None:
        for key in list(self.servers):
            self._close(key)

    async def stop(self, timeout: float) -> int:
        """Stop listening, let established connections finish; how many were aborted."""
        self.close_all()
        return await self.drain(timeout)

    def count_connections(self) -> int:
        return len(self.connections)

    async def drain(self, timeout: float) -> int:
        """Wait for established connections to end; abort what is left after timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for connection in list(self.connections):
            shutdown = getattr(connection, "shutdown", None)
            if shutdown is not None:
                shutdown()  # message-level modes close once their answers are out
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = len(self.connections)
        for connection in list(self.connections):
            connection.abort()
        for handle in self.handles.values():
            dispatcher = getattr(handle, "dispatcher", None)
            if dispatcher is not None:
                dispatcher.close_all()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        await asyncio.sleep(0)  # let the closes reach the kernel before the loop ends
        return left

    def _on_changes(self, changes: list[Change]) -> None:
        """on_halt: close: a halted server loses its established connections at once."""
        for change in changes:
            if change.kind != "state" or change.new != "halt":
                continue
            service = self.runtime.services.get(change.service)
            if service is None or service.config.on_halt != "close":
                continue
            victims = [c for c in self.connections if c.server is not None
                       and c.server.service == change.service and c.server.name == change.subject]
            for connection in victims:
                connection.abort()
            if victims:
                log.event("halt_closed_connections", service=change.service, server=change.subject,
                          connections=len(victims))


def tls_setup(runtime: Runtime, base_dir: Path | None) -> dict[str, tuple[TlsTerminator | None, object, str | None]]:
    """Every service's TLS contexts, built from the files now (so a reload picks up
    renewed certificates); raise BindError, changing nothing, if a file is unusable."""
    result: dict[str, tuple[TlsTerminator | None, object, str | None]] = {}
    for name, service in runtime.services.items():
        config = service.config
        try:
            terminator = TlsTerminator(config.tls, base_dir) if config.tls is not None else None
            backend = client_context(config.backend_tls, base_dir) if config.backend_tls is not None else None
        except TlsSetupError as exc:
            raise BindError(f"service {name!r}: {exc}") from None
        result[name] = (terminator, backend, config.backend_tls.server_name if config.backend_tls is not None else None)
    return result
