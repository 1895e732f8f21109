"""`http` mode: HTTP/1.1 reverse proxy with keep-alive on both sides.

One task per client connection reads request heads with h11 (which bounds the head's
size), picks a server (cookie or source persistence, then the scheduler; `routes` choose
a named pool by path prefix), takes an idle keep-alive connection to that server from a
small per-server pool or opens one (re-encrypting with `backend_tls`), and streams:
the request body goes to the server while the response comes back, each chunk written
and, when the other side's buffer is full, waited for (StreamWriter.drain), so medlb
holds about one read buffer plus one write buffer per direction whatever the body size.
Chunked bodies are decoded by h11 on one side and encoded again on the other.

medlb answers itself only before a response has started: 503 when no server can take
the request, 502 when the server failed (refused, reset, answered garbage), 504 when it
did not start answering within `http.server_timeout`; 400/431/408 for bad, oversized or
too slow request heads. After a response has started, a failure closes the connection.
Heads whose body length two parsers could read differently are refused before anything
is forwarded (the rules: medlb.protocols.http).

A request head must arrive whole within `header_timeout` of the connection's accept, or
of its first byte on a kept-alive connection (whose wait for that byte is bounded by
`keepalive_timeout`). These deadlines are kept without a timer per connection: the
listeners' idle sweep calls `idle_check`, which wakes the reading task with a
TimeoutError once its deadline has passed.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import h11

from medlb.logs import get_logger
from medlb.protocols import http as rules
from medlb.protocols.http import Refusal, check_request_head, head_length
from medlb.proxy.tcp import admit
from medlb.runtime import Server

if TYPE_CHECKING:
    from medlb.proxy.tcp import ServiceHandle

log = get_logger("medlb.http")

READ_SIZE = 65536

REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class UpstreamFailed(Exception):
    """The server failed before its response started; `retry` if another connection may try."""

    def __init__(self, reason: str, retry: bool = False, status: int = 502):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.status = status


class ClientGone(Exception):
    pass


class Upstream:
    """One keep-alive connection to a server."""

    __slots__ = ("server", "reader", "writer", "conn", "idle_since", "reused")

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)
        self.idle_since = 0.0
        self.reused = False

    def usable(self, now: float, max_idle: float) -> bool:
        return (not self.reader.at_eof() and not self.writer.is_closing()
                and now - self.idle_since < max_idle and self.conn.our_state is h11.IDLE)

    def close(self) -> None:
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()


class ServerPools:
    """Idle keep-alive connections per server (Server objects survive reloads)."""

    def __init__(self) -> None:
        self.idle: dict[Server, list[Upstream]] = {}

    def take(self, server: Server, max_idle: float) -> Upstream | None:
        stack = self.idle.get(server)
        now = time.monotonic()
        while stack:
            upstream = stack.pop()
            if upstream.usable(now, max_idle):
                upstream.reused = True
                return upstream
            upstream.close()
        return None

    def give(self, upstream: Upstream, limit: int) -> None:
        stack = self.idle.setdefault(upstream.server, [])
        if len(stack) >= limit:
            upstream.close()
            return
        upstream.idle_since = time.monotonic()
        stack.append(upstream)

    def close_all(self) -> None:
        for stack in self.idle.values():
            for upstream in stack:
                upstream.close()
        self.idle.clear()

    def keep_only(self, servers: set[Server]) -> None:
        """After a reload: close the idle connections to servers the config dropped (or
        moved to another address), instead of leaving them open until server_idle_timeout."""
        for server in [s for s in self.idle if s not in servers]:
            for upstream in self.idle.pop(server):
                upstream.close()


def _pools(handle: "ServiceHandle") -> ServerPools:
    if handle.http_pools is None:
        handle.http_pools = ServerPools()
    return handle.http_pools


def _paused(writer: asyncio.StreamWriter) -> bool:
    protocol = writer.transport.get_protocol()
    return bool(getattr(protocol, "_paused", False))


def http_factory(handle: "ServiceHandle", local_port: int) -> "HttpClient":
    return HttpClient(handle, local_port)


class HttpClient(asyncio.StreamReaderProtocol):
    """One client connection: a loop of request/response exchanges."""

    def __init__(self, handle: "ServiceHandle", local_port: int):
        self.reader = asyncio.StreamReader(limit=READ_SIZE)
        super().__init__(self.reader)
        self.handle = handle
        self.service = handle.service
        self.local_port = local_port
        self.plain_on_tls = False
        self.server: Server | None = None
        self.counted = False
        self.closing = False
        self.idle = True
        self.transport_: asyncio.Transport | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.client_ip = ""
        self.task: asyncio.Task[None] | None = None
        #: Loop time by which the awaited request head (or a kept-alive connection's
        #: next first byte) must have come; 0: not waiting for one. See idle_check.
        self.head_deadline = 0.0

    # --- asyncio ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport_ = transport  # type: ignore[assignment]
        if not admit(self.service):
            transport.close()  # accepted and closed at once, no byte sent
            return
        self.counted = True
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        transport.set_write_buffer_limits(high=self.service.config.limits.buffer_size)  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        self.writer = asyncio.StreamWriter(transport, self, self.reader, loop)  # type: ignore[arg-type]
        self.handle.connections.add(self)
        config = self.service.config.http
        assert config is not None
        self.head_deadline = loop.time() + config.header_timeout
        self.task = loop.create_task(self.run())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._release()

    def _release(self) -> None:
        if not self.counted:
            return
        self.counted = False
        self.service.active -= 1
        self.handle.connections.discard(self)

    def close(self) -> None:
        """Close now; a response being written is cut short where it is."""
        if self.transport_ is not None:
            self.transport_.close()

    def abort(self) -> None:
        if self.transport_ is not None:
            self.transport_.abort()
        if self.task is not None:
            self.task.cancel()

    def shutdown(self) -> None:
        """Stop taking requests: close now if idle, else after the current response."""
        self.closing = True
        if self.idle and self.transport_ is not None:
            self.transport_.close()

    # --- the exchange loop ------------------------------------------------------------

    async def run(self) -> None:
        conn: h11.Connection | None = None
        try:
            service = self.service
            config = service.config.http
            assert config is not None
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_size)
            first = True
            while not self.closing:
                self.idle = True
                request = await self._read_head(conn, first)
                if request is None:
                    break
                self.idle = False
                first = False
                self.service = service = self.handle.service  # new requests see a reload
                if not await self._exchange(conn, request):
                    break
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                else:
                    break
        except (ClientGone, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            if self.transport_ is not None:
                self.transport_.abort()
            raise
        except Exception:  # a bug must not leave the connection hanging
            log.error("http_connection_error", exc_info=True, service=self.service.name)
            if self.transport_ is not None:
                self.transport_.abort()
            return
        finally:
            self.idle = True
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()

    async def _read_client(self, conn: h11.Connection, timeout: float | None,
                           received: list[bytes] | None = None) -> Any:
        """The next h11 event from the client, reading as needed: each read within
        `timeout` (a body), or with none (a head: idle_check ends the wait at
        head_deadline). The bytes read are added to `received` if given."""
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if timeout is None:
                data = await self.reader.read(READ_SIZE)
            else:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
            conn.receive_data(data)
            if received is not None:
                received.append(data)

    async def _read_head(self, conn: h11.Connection, first: bool) -> h11.Request | None:
        config = self.service.config.http
        assert config is not None
        stats = self.service.http_stats
        assert stats is not None
        loop = asyncio.get_running_loop()
        # The bytes of this head as they arrived, for the rules that h11's parse hides.
        pending = conn.trailing_data[0]  # a pipelined request's first bytes, if any
        received = [pending] if pending else []
        if not first and not pending:
            # Keep-alive: wait for the next request's first byte, then give it header_timeout.
            self.head_deadline = loop.time() + min(config.keepalive_timeout, self.service.config.limits.idle_timeout)
            try:
                data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                return None
            finally:
                self.head_deadline = 0.0
            if not data:
                return None
            conn.receive_data(data)
            received.append(data)
        if not first:
            self.head_deadline = loop.time() + config.header_timeout  # the first request's began at accept
        try:
            event = await self._read_client(conn, None, received)
            if isinstance(self.reader.exception(), TimeoutError):
                raise TimeoutError()  # the deadline passed while the last bytes waited to be read
        except TimeoutError:
            stats.errors["header_timeout"] += 1
            self._error(conn, 408, "The request head did not arrive in time.\n")
            return None
        except h11.RemoteProtocolError as exc:
            refusal = self._head_refusal(received)
            if refusal is not None:
                self._refuse(conn, refusal)
                return None
            status = exc.error_status_hint
            if status == 431:
                stats.errors["header_too_large"] += 1
            else:
                stats.errors["bad_request"] += 1
            if conn.trailing_data[0] or conn.their_state is h11.ERROR:
                self._error(conn, status, "The request head is too large.\n" if status == 431
                            else "The request is not valid HTTP/1.1.\n")
            return None
        finally:
            self.head_deadline = 0.0
        if isinstance(event, h11.ConnectionClosed) or not isinstance(event, h11.Request):
            return None
        refusal = self._head_refusal(received)
        if refusal is not None:
            self._refuse(conn, refusal)
            return None
        # h11 bounds only a head that is still incomplete; one that arrived whole in a
        # single read is measured here.
        size = len(event.method) + len(event.target) + 12 + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if size > config.max_header_size:
            stats.errors["header_too_large"] += 1
            self._error(conn, 431, "The request head is too large.\n")
            return None
        if len(event.headers) > config.max_headers:
            stats.errors["too_many_headers"] += 1
            self._error(conn, 431, f"More than {config.max_headers} header lines.\n")
            return None
        return event

    @staticmethod
    def _head_refusal(received: list[bytes]) -> Refusal | None:
        """The head rules' verdict on the bytes received, once they hold a whole head."""
        data = received[0] if len(received) == 1 else b"".join(received)
        return check_request_head(data) if head_length(data) is not None else None

    def _refuse(self, conn: h11.Connection, refusal: Refusal) -> None:
        stats = self.service.http_stats
        assert stats is not None
        stats.errors[refusal.reason] += 1
        self._error(conn, refusal.status, refusal.text)

    def idle_check(self, now: float) -> None:
        """Called by the listeners' sweep (Listeners._sweep): past head_deadline, wake
        the task waiting for the head with a TimeoutError (it answers 408, or closes
        quietly if no byte of a next request came)."""
        if self.head_deadline and now >= self.head_deadline:
            self.head_deadline = 0.0
            self.reader.set_exception(TimeoutError())

    def _error(self, conn: h11.Connection, status: int, text: str, server: str = "",
               extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """medlb's own short answer, then close. Nothing if a response has started."""
        writer = self.writer
        if writer is None or writer.is_closing():
            return
        body = text.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), *(extra or [])]
        try:
            if conn.their_state is h11.ERROR or conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                raise h11.LocalProtocolError("cannot answer on this connection")
            data = conn.send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, "")))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # h11 refuses to answer a request it could not parse: write the answer by hand.
            data = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n".encode()
                    + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body)
        writer.write(data)
        self.closing = True
        stats = self.service.http_stats
        if stats is not None:
            stats.requests[(server, f"{status // 100}xx")] += 1

    # --- one request --------------------------------------------------------------------

    async def _exchange(self, conn: h11.Connection, request: h11.Request) -> bool:
        """Serve one request; False if the client connection must close afterwards."""
        service = self.service
        config = service.config.http
        assert config is not None
        stats = service.http_stats
        assert stats is not None
        if self.plain_on_tls:
            return self._refuse_plain(conn, request)
        started = time.monotonic()
        pool_name = rules.route(service.config.http.routes if service.config.http else (), request.target)
        persistence = service.config.persistence
        cookie_name = persistence.name.encode() if persistence.type == "cookie" else None  # type: ignore[union-attr]
        cookie = rules.cookie_value(request.headers, cookie_name) if cookie_name else None
        has_body = conn.their_state is h11.SEND_BODY
        tried: set[Server] = set()
        limits = service.config.limits
        fresh_only = False
        stats.in_flight += 1
        try:
            for attempt in range(2 + limits.connect_retries):
                server = service.server_for_cookie(cookie, pool_name) if cookie else None
                if server is None or server in tried:
                    server = service.pick(self.client_ip, tried, pool_name)
                if server is None:
                    if tried:
                        stats.gateway_error(502, "bad_gateway")
                        self._error(conn, 502, "The server failed to answer.\n")
                    else:
                        service.no_server += 1
                        stats.gateway_error(503, "no_server")
                        self._error(conn, 503, "No server is available to take this request.\n")
                    return False
                try:
                    upstream = await self._upstream(server, fresh_only)
                except UpstreamFailed:
                    tried.add(server)
                    continue
                self.server = server
                server.active += 1
                server.total += 1
                try:
                    return await self._relay(conn, request, upstream, server, cookie, cookie_name, started)
                except UpstreamFailed as failure:
                    upstream.close()
                    if failure.retry and not has_body:
                        fresh_only = True  # a pooled connection the server had closed: try a new one
                        continue
                    stats.gateway_error(failure.status, "gateway_timeout" if failure.status == 504 else "bad_gateway",
                                        server.name)
                    log.debug("upstream_failed", service=service.name, server=server.name, reason=failure.reason)
                    self._error(conn, failure.status, "The server did not answer in time.\n"
                                if failure.status == 504 else "The server failed to answer.\n", server=server.name)
                    return False
                finally:
                    server.active -= 1
                    self.server = None
            stats.gateway_error(502, "bad_gateway")
            self._error(conn, 502, "No server accepted the connection.\n")
            return False
        finally:
            stats.in_flight -= 1

    def _refuse_plain(self, conn: h11.Connection, request: h11.Request) -> bool:
        config = self.service.config.http
        stats = self.service.http_stats
        assert config is not None and stats is not None
        host = next((v for k, v in request.headers if k == b"host"), b"").decode("latin-1")
        if config.redirect_http and host:
            if host.endswith(":80"):
                host = host[:-3]
            location = f"https://{host}{request.target.decode('latin-1')}"
            status = 301 if request.method in (b"GET", b"HEAD") else 308
            stats.errors["redirected_to_https"] += 1
            self._error(conn, status, f"Use {location}\n", extra=[(b"location", location.encode("latin-1"))])
        else:
            stats.errors["plain_http_on_tls"] += 1
            self._error(conn, 400, "This port speaks HTTPS: use https://.\n")
        return False

    async def _upstream(self, server: Server, fresh_only: bool) -> Upstream:
        service = self.service
        config = service.config.http
        assert config is not None
        pools = _pools(self.handle)
        if not fresh_only:
            upstream = pools.take(server, config.server_idle_timeout)
            if upstream is not None:
                return upstream
        host, port = server.address_for(self.local_port)
        backend_ssl = self.handle.backend_ssl
        try:
            async with asyncio.timeout(service.config.limits.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=READ_SIZE, ssl=backend_ssl,
                    server_hostname=(self.handle.backend_server_name or host) if backend_ssl else None)
        except (OSError, TimeoutError) as exc:
            server.connect_failures += 1
            log.debug("connect_failed", service=service.name, server=server.name,
                      reason="timeout" if isinstance(exc, TimeoutError) else str(exc))
            raise UpstreamFailed(str(exc)) from None
        writer.transport.set_write_buffer_limits(high=service.config.limits.buffer_size)
        return Upstream(server, reader, writer)

    def _request_headers(self, request: h11.Request, cookie_name: bytes | None) -> list[tuple[bytes, bytes]]:
        tls = self.transport_ is not None and bool(self.transport_.get_extra_info("tls"))
        return rules.request_headers(request.headers, self.client_ip, tls, cookie_name)

    async def _relay(self, conn: h11.Connection, request: h11.Request, upstream: Upstream, server: Server,
                     cookie: str | None, cookie_name: bytes | None, started: float) -> bool:
        service = self.service
        config = service.config.http
        stats = service.http_stats
        assert config is not None and stats is not None and self.writer is not None
        up = upstream.conn
        try:
            head = up.send(h11.Request(method=request.method, target=request.target,
                                       headers=self._request_headers(request, cookie_name)))
        except h11.LocalProtocolError as exc:
            upstream.close()
            stats.errors["bad_request"] += 1
            self._error(conn, 400, f"The request cannot be forwarded: {exc}\n")
            return False
        upstream.writer.write(head)
        server.bytes_to_server += len(head)
        pump: asyncio.Task[None] | None = None
        if conn.their_state is not h11.SEND_BODY:
            # No request body (most requests): wait for the head in this task.
            try:
                async with asyncio.timeout(config.server_timeout):
                    response = await self._response_head(conn, upstream)
            except TimeoutError:
                upstream.close()
                raise UpstreamFailed("no response within server_timeout", status=504) from None
            except BaseException:
                upstream.close()
                raise
        else:
            # The body goes up while the response may already come back.
            pump = asyncio.get_running_loop().create_task(self._pump_request(conn, upstream, server))
            response_task = asyncio.get_running_loop().create_task(self._response_head(conn, upstream))
            try:
                await asyncio.wait({pump, response_task}, return_when=asyncio.FIRST_COMPLETED)
                if pump.done() and pump.exception() is not None:
                    raise pump.exception()  # type: ignore[misc]
                try:
                    async with asyncio.timeout(config.server_timeout):
                        response = await response_task
                except TimeoutError:
                    raise UpstreamFailed("no response within server_timeout", status=504) from None
            except BaseException:
                response_task.cancel()
                pump.cancel()
                upstream.close()
                raise

        # The response has started: from here a failure closes the client connection.
        headers = rules.response_headers(response.headers)
        if cookie_name is not None:
            value = service.cookie_value(server)
            if value != cookie:
                secure = self.transport_ is not None and bool(self.transport_.get_extra_info("tls"))
                headers.append(rules.set_cookie(cookie_name, value, getattr(service.config.persistence, "max_age", None),
                                                secure))
        if self.closing:
            headers.append((b"connection", b"close"))
        try:
            data = conn.send(h11.Response(status_code=response.status_code, headers=headers,
                                          reason=response.reason))
        except h11.LocalProtocolError:
            raise ClientGone() from None
        self.writer.write(data)
        stats.observe(server.name, response.status_code, time.monotonic() - started)
        keep_upstream = False
        try:
            while True:
                try:
                    async with asyncio.timeout(config.body_timeout):
                        event = await self._read_upstream(upstream)
                except (TimeoutError, h11.RemoteProtocolError, ConnectionError, OSError):
                    stats.errors["response_body_failed"] += 1
                    raise ClientGone() from None
                if isinstance(event, h11.Data):
                    self.writer.write(conn.send(h11.Data(data=event.data)))
                    server.bytes_to_client += len(event.data)
                    if _paused(self.writer):
                        async with asyncio.timeout(config.body_timeout):
                            await self.writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    self.writer.write(conn.send(h11.EndOfMessage()))
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ClientGone()
            if pump is not None and not pump.done():
                # The server answered before taking the whole request body: close both.
                pump.cancel()
                return False
            if pump is not None and pump.exception() is not None:
                return False
            keep_upstream = up.our_state is h11.DONE and up.their_state is h11.DONE
            if keep_upstream:
                up.start_next_cycle()
                _pools(self.handle).give(upstream, config.server_idle_connections)
            return True
        except TimeoutError:
            raise ClientGone() from None
        finally:
            if not keep_upstream:
                upstream.close()
                if pump is not None and not pump.done():
                    pump.cancel()

    async def _read_upstream(self, upstream: Upstream) -> Any:
        up = upstream.conn
        while True:
            event = up.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await upstream.reader.read(READ_SIZE)
            up.receive_data(data)

    async def _response_head(self, conn: h11.Connection, upstream: Upstream) -> h11.Response:
        """The server's response head; informational (1xx) answers are passed on."""
        assert self.writer is not None
        while True:
            try:
                event = await self._read_upstream(upstream)
            except h11.RemoteProtocolError as exc:
                raise UpstreamFailed(f"not a valid HTTP response: {exc}", retry=upstream.reused) from None
            except (ConnectionError, OSError) as exc:
                raise UpstreamFailed(str(exc), retry=upstream.reused) from None
            if isinstance(event, h11.InformationalResponse):
                if event.status_code != 101:
                    self.writer.write(conn.send(event))
                continue
            if isinstance(event, h11.Response):
                return event
            raise UpstreamFailed("the server closed the connection without answering", retry=upstream.reused)

    async def _pump_request(self, conn: h11.Connection, upstream: Upstream, server: Server) -> None:
        """Stream the request body to the server, chunk by chunk."""
        config = self.service.config.http
        assert config is not None
        writer = upstream.writer
        while True:
            try:
                event = await self._read_client(conn, config.body_timeout)
            except TimeoutError:
                self.service.http_stats.errors["request_body_timeout"] += 1  # type: ignore[union-attr]
                raise ClientGone() from None
            except h11.RemoteProtocolError:
                raise ClientGone() from None
            if isinstance(event, h11.Data):
                data = upstream.conn.send(h11.Data(data=event.data))
                writer.write(data)
                server.bytes_to_server += len(event.data)
                if _paused(writer):
                    try:
                        async with asyncio.timeout(config.body_timeout):
                            await writer.drain()
                    except (TimeoutError, ConnectionError, OSError):
                        raise ClientGone() from None
            elif isinstance(event, h11.EndOfMessage):
                writer.write(upstream.conn.send(h11.EndOfMessage()))
                return
            else:
                raise ClientGone()
