"""Listen sockets for every service, kept in step with the config across reloads.

A reload first prepares (medlb/dataplane.py): certificates are loaded and every new
address is bound and listening, while the running listeners go on as before. Only a
commit routes addresses to their new services, starts accepting on the new ones and
closes the ones no longer used; a discard closes what the preparation opened. A
socket is never closed and bound again on reload: an address that stays keeps its
socket, and one that moves to another service keeps it too and is routed anew, so a
refused reload cannot leave a service without its listener. Closing a listener never
touches established connections.

Accepting stops at the process's connection ceiling (see medlb.descriptors): a client
over it is closed at once, before any protocol sees it, so the descriptors kept in
reserve stay free for the admin API, the health checks and the store. Below the
ceiling again, clients are served as before.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from medlb import descriptors
from medlb.config.models import Config
from medlb.config.units import HostPort
from medlb.dataplane import Connections, Refused
from medlb.logs import Throttle, get_logger
from medlb.proxy.dicom import DicomClient
from medlb.proxy.http import http_factory
from medlb.proxy.mllp import mllp_factory
from medlb.proxy.tcp import ServiceHandle, TcpClient
from medlb.proxy.tls import TlsServerProtocol
from medlb.runtime import Change, Runtime, Service
from medlb.runtime.model import ReloadPlan
from medlb.tls import TlsSetupError, TlsTerminator, client_context

log = get_logger("medlb.proxy")

#: linux/in.h and linux/in6.h (Python 3.11's socket module names neither).
IP_FREEBIND = 15
IPV6_FREEBIND = 78
#: While clients are refused at the connection ceiling, one log line per this many seconds.
CEILING_LOG_EVERY = 10.0

#: Protocol factories per mode, called with (handle, local_port).
PROTOCOLS: dict[str, Callable[[ServiceHandle, int], asyncio.Protocol]] = {
    "tcp": TcpClient, "dicom": DicomClient, "mllp": mllp_factory, "http": http_factory}

TlsSetup = dict[str, tuple[TlsTerminator | None, object, str | None]]


class BindError(Refused):
    @classmethod
    def cannot_listen(cls, name: str, address: HostPort, exc: OSError) -> "BindError":
        """The operator's words for a failed bind, wherever the socket is bound."""
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        return cls(f"service {name!r} cannot listen on {address}: {why}")


def floating_hosts(config: Config) -> frozenset[str]:
    """The pair's VIPs: the addresses this node may listen on before it holds them."""
    return frozenset(str(vip.ip) for vip in config.ha.vips) if config.ha is not None else frozenset()


def bound_socket(name: str, address: HostPort, reuse_port: bool = False,
                 floating: frozenset[str] = frozenset()) -> socket.socket:
    """A TCP socket bound to `address` (not yet listening); BindError if it cannot be.

    An address among `floating` (the pair's VIPs) is bound with IP_FREEBIND: the passive
    node listens on VIPs its peer holds, and serves the instant keepalived moves them
    here, with nothing to rebind. Any other address must be on this host, so a listen
    address mistyped is refused at start rather than listening for nobody.

    SO_KEEPALIVE is set here once: Linux copies it to every connection accepted on the
    socket, which spares each one a setsockopt (and uvloop's two getsockname to make a
    socket object for it) on the connect path."""
    assert address.port is not None
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # inherited by accepted sockets
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if address.host in floating:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise BindError.cannot_listen(name, address, exc) from None
    return sock


@dataclass(eq=False)
class ListenerPlan:
    """The listeners' side of a reload plan: new addresses bound and listening (their
    connections wait in the queue until commit), certificates loaded."""

    listeners: "Listeners"
    services: dict[str, Service]
    #: Every address this process serves after commit, and the service it goes to.
    routes: dict[HostPort, str]
    #: Listeners this plan opened (a discard closes them, and only them).
    opened: dict[HostPort, asyncio.AbstractServer]
    tls: TlsSetup
    #: limits.descriptor_reserve of the planned config (see medlb.descriptors).
    descriptor_reserve: int

    async def commit(self) -> list[int]:
        await self.listeners._commit(self)
        return []

    async def discard(self) -> None:
        for server in self.opened.values():
            server.close()


class Listeners:
    def __init__(self, runtime: Runtime, backlog: int = 1024):
        self.runtime = runtime
        self.backlog = backlog
        self.handles: dict[str, ServiceHandle] = {}
        #: Each listen address, its listener, and the service it is routed to.
        self.listening: dict[HostPort, asyncio.AbstractServer] = {}
        self.routes: dict[HostPort, str] = {}
        self.connections: Connections = set()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._sweep_every = 1.0
        #: False in a worker process: the health checks run in the control process, so
        #: their descriptors are not reserved here.
        self.runs_checks = True
        #: Relayed connections this process holds at most (from its open-file limit);
        #: derived by each commit, no bound before the first.
        self.ceiling = sys.maxsize
        self._ceiling_lines = Throttle(CEILING_LOG_EVERY)
        runtime.subscribe(self.on_changes)

    async def prepare(self, plan: ReloadPlan, base_dir: Path | None, routes: dict[HostPort, str] | None = None,
                      provided: dict[HostPort, socket.socket] | None = None) -> ListenerPlan:
        """Everything the plan needs that can fail, beside the running listeners: raise
        BindError, having closed what this opened, if an address or a certificate is
        unusable. Relative certificate paths are taken from base_dir.

        In a worker, `routes` are the addresses this process serves and `provided` the
        sockets the control process bound for those it does not hold yet; they belong
        to the plan from here on (a refusal closes them).
        """
        provided = dict(provided or {})
        if routes is None:
            routes = {address: name for name, service in plan.services.items()
                  for address in service.config.relayed_addresses}
        opened: dict[HostPort, asyncio.AbstractServer] = {}
        try:
            tls = tls_setup(plan.services, base_dir)
            for address in sorted(routes, key=str):
                sock = provided.pop(address, None)
                if sock is None and address in self.listening:
                    continue  # it stays, or moves to another service: the same socket
                if sock is None:
                    sock = bound_socket(routes[address], address, floating=floating_hosts(plan.config))
                    try:
                        sock.listen(self.backlog)
                    except OSError as exc:
                        sock.close()
                        raise BindError.cannot_listen(routes[address], address, exc) from None
                opened[address] = await self._listener(routes[address], address, sock)
        except BaseException:
            for server in opened.values():
                server.close()
            raise
        finally:
            for sock in provided.values():
                sock.close()
        return ListenerPlan(self, plan.services, dict(routes), opened, tls, plan.config.limits.descriptor_reserve)

    async def _listener(self, name: str, address: HostPort, sock: socket.socket) -> asyncio.AbstractServer:
        """A listener on a listening socket, not yet accepting; it sends each connection
        to the service its address is routed to when the connection comes."""
        port = address.port
        assert port is not None

        def accept() -> asyncio.Protocol:
            if len(self.connections) >= self.ceiling:
                return self._refuse(self.handles[self.routes[address]])
            handle = self.handles[self.routes[address]]
            factory = PROTOCOLS[handle.service.mode]
            terminator = handle.tls
            if terminator is None:
                return factory(handle, port)
            return TlsServerProtocol(terminator, lambda: factory(handle, port),
                                     (lambda: factory(handle, port)) if handle.service.mode == "http" else None,
                                     handshake_timeout=handle.service.config.limits.connect_timeout * 3)

        try:
            return await asyncio.get_running_loop().create_server(accept, sock=sock, backlog=self.backlog,
                                                                  start_serving=False)
        except OSError as exc:
            sock.close()
            raise BindError.cannot_listen(name, address, exc) from None

    async def _commit(self, plan: ListenerPlan) -> None:
        """Route every address to its new service, accept on the new ones, close the
        unused ones. Nothing here can fail; the swap is done before the first await."""
        new_handles = {name: self.handles.get(name) or ServiceHandle(service, self.runtime, self.connections)
                       for name, service in plan.services.items()}
        for name, handle in new_handles.items():
            handle.service = plan.services[name]
            terminator, backend, server_name = plan.tls[name]
            if terminator is not None and handle.tls is not None:
                handle.tls.adopt(terminator)
            else:
                handle.tls = terminator
            handle.backend_ssl, handle.backend_server_name = backend, server_name
            handle.service.tls = handle.tls
            handle.reloaded()
        for name in self.handles.keys() - new_handles.keys():
            self.handles[name].removed()
        self.handles = new_handles
        for address in [a for a in self.listening if a not in plan.routes or a in plan.opened]:
            self._close(address)
        self.routes = dict(plan.routes)
        self.listening.update(plan.opened)
        for address in sorted(plan.opened, key=str):
            name = plan.routes[address]
            log.event("listening", service=name, address=str(address), mode=plan.services[name].mode)
        self._set_ceiling(plan)
        timeouts = [service.config.limits.idle_timeout for service in plan.services.values()]
        # mode http keeps its head, keep-alive, response and body deadlines on the same sweep.
        timeouts += [min(service.config.http.header_timeout, service.config.http.keepalive_timeout,
                         service.config.http.server_timeout, service.config.http.body_timeout)
                     for service in plan.services.values() if service.config.http is not None]
        self._sweep_every = min(30.0, max(0.05, min(timeouts, default=3600.0) / 8))
        if self._sweep_handle is None:
            self._sweep_handle = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)
        for server in plan.opened.values():
            await server.start_serving()

    def _set_ceiling(self, plan: ListenerPlan) -> None:
        """Derive the ceiling from this process's limit and what it holds besides
        relayed connections; logged when it changes (at start, on a reload)."""
        limit = descriptors.open_files_limit()[0]
        reserve = descriptors.reserve(plan.descriptor_reserve, [s.config for s in plan.services.values()],
                                      len(self.listening), checks=self.runs_checks)
        ceiling = descriptors.ceiling(limit, reserve)
        if ceiling != self.ceiling:
            level = log.warning if ceiling == 0 else log.event
            level("connection_ceiling", ceiling=ceiling, open_files=limit, reserve=reserve)
        self.ceiling = ceiling

    def _refuse(self, handle: ServiceHandle) -> asyncio.Protocol:
        """A client over the ceiling: counted, logged now and then, closed at once."""
        service = handle.service
        service.counters.descriptor_refused += 1
        count = self._ceiling_lines.hit()
        if count:
            log.warning("connection_ceiling_reached", service=service.name, ceiling=self.ceiling,
                        connections=len(self.connections), refused=count)
        return _Refused()

    def _sweep(self) -> None:
        """Close connections idle past their service's idle_timeout (and, in mode http,
        end the wait for a request head past its deadline).

        One timer for every connection rather than one each: the data path only counts
        bytes or messages, and a sweep every 1/8 of the shortest timeout (at most 30 s)
        compares the counts with the last sweep's. An idle connection closes between
        its timeout and one sweep later.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in list(self.connections):
            connection.idle_check(now)
        self._sweep_handle = loop.call_later(self._sweep_every, self._sweep)

    def _close(self, address: HostPort) -> None:
        self.listening.pop(address).close()
        log.event("listener_closed", service=self.routes.get(address, ""), address=str(address))

    def close_all(self) -> None:
        for address in list(self.listening):
            self._close(address)

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
            connection.shutdown()  # message-level modes close once their answers are out
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = len(self.connections)
        for connection in list(self.connections):
            connection.abort()
        for handle in self.handles.values():
            handle.stopped()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        await asyncio.sleep(0)  # let the closes reach the kernel before the loop ends
        return left

    def on_changes(self, changes: list[Change]) -> None:
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


class _Refused(asyncio.Protocol):
    """A client accepted over the connection ceiling: closed at once, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def tls_setup(services: dict[str, Service], base_dir: Path | None) -> TlsSetup:
    """Every service's TLS contexts, built from the files now (so a reload picks up
    renewed certificates); raise BindError, changing nothing, if a file is unusable."""
    result: TlsSetup = {}
    for name, service in services.items():
        config = service.config
        try:
            terminator = TlsTerminator(config.tls, base_dir) if config.tls is not None else None
            backend = client_context(config.backend_tls, base_dir) if config.backend_tls is not None else None
        except TlsSetupError as exc:
            raise BindError(f"service {name!r}: {exc}") from None
        result[name] = (terminator, backend, config.backend_tls.server_name if config.backend_tls is not None else None)
    return result
