"""`http` mode: HTTP/1.1 reverse proxy with keep-alive on both sides.

Built on asyncio Protocols like the tcp relay: no streams and no task per request.
Each request head is parsed by llhttp (httptools, its lenient flags off) once it has
arrived whole, judged by the head rules (medlb.protocols.http), and forwarded with only
its head rewritten: the forwarding headers are inserted into the raw bytes, hop-by-hop
headers and medlb's cookie taken out. Bodies pass through as they came: one whose
length is known by count, a chunked one by scanning only its chunk sizes
(rules.ChunkedBody), never decoded and encoded again. A request goes to a server (cookie
or source persistence, then the scheduler; `routes` choose a named pool by path prefix)
over an idle keep-alive connection from a small per-server pool, or a new one
(re-encrypted with `backend_tls`); a task runs only while a new connection is made.

Flow control both ways: when one side's write buffer passes `limits.buffer_size`, the
other side stops reading until it drains, so medlb holds about one read buffer plus one
write buffer per direction whatever the body size.

medlb answers itself only before a response has started: 503 when no server can take
the request, 502 when the server failed (refused, reset, answered garbage), 504 when it
did not start answering within `http.server_timeout`; 400/431/408 for bad, oversized or
too slow request heads. After a response has started, a failure closes the connection.
Heads whose body length two parsers could read differently are refused before anything
is forwarded.

Deadlines are kept without a timer per request: the listeners' idle sweep calls
`idle_check`. A request head must arrive whole within `header_timeout` of the
connection's accept, or of its first byte on a kept-alive connection (whose wait for
that byte is bounded by `keepalive_timeout`); a response must start within
`server_timeout` of the request's end; a body that moves no byte either way for
`body_timeout` ends the exchange.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
import time
from typing import TYPE_CHECKING

import httptools

from medlb.logs import get_logger
from medlb.protocols import http as rules
from medlb.protocols.http import BadChunk, ChunkedBody, Refusal, check_request_head, head_length
from medlb.proxy.tcp import admit
from medlb.runtime import Server
from medlb.tasks import spawn

if TYPE_CHECKING:
    from medlb.proxy.tcp import ServiceHandle

log = get_logger("medlb.http")

REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

#: A server's response head longer than this is not a valid answer (502).
MAX_RESPONSE_HEAD = 256 * 1024

#: Client states: reading a request head, passing its body on, the request read whole.
HEAD, BODY, DONE = range(3)
#: What idle_check watches: nothing, the head's deadline, a kept-alive connection's
#: wait for a first byte, the response head's deadline, a body's progress.
NO_DEADLINE, HEAD_DEADLINE, KEEPALIVE, RESPONSE_DEADLINE, BODY_PROGRESS = range(5)

#: The running loop and its clock (libuv's time, taken once per loop iteration), found
#: once per connection rather than per request: asyncio.get_running_loop() costs a
#: getpid system call in Python 3.11.
_loop: asyncio.AbstractEventLoop | None = None
_clock = time.monotonic


def _loop_clock() -> None:
    global _loop, _clock
    loop = asyncio.get_running_loop()
    if loop is not _loop:
        _loop, _clock = loop, loop.time


#: Request header names whose presence calls for more than inserting the forwarding
#: headers (with Cookie when persistence is by cookie).
_REWRITE = rules.HOP_BY_HOP | rules.FORWARDING_HEADERS
#: The request header names RequestHeads.on_header acts on (besides look-alikes of
#: the forwarding headers).
_REQUEST_NAMES = _REWRITE | {b"host", b"content-length", b"transfer-encoding", b"cookie"}
#: The response header names Upstream.on_header acts on.
_RESPONSE_NAMES = rules.HOP_BY_HOP | {b"content-length", b"transfer-encoding"}
#: Header names, exactly as clients and servers commonly spell them, that neither
#: on_header acts on: passed over without lowering them (a new bytes object each).
_PASSED_OVER = frozenset({b"Server", b"Date", b"Content-Type", b"Last-Modified", b"ETag", b"Accept-Ranges",
                          b"Cache-Control", b"Expires", b"Vary", b"Content-Encoding", b"User-Agent", b"Accept",
                          b"Accept-Encoding", b"Accept-Language", b"Referer", b"Origin", b"Authorization",
                          b"If-None-Match", b"If-Modified-Since", b"Content-Language", b"Location"})
#: The names the callbacks act on, as commonly spelled, with their lower-case form.
_SPELLED = {name.title(): name for name in _REQUEST_NAMES | _RESPONSE_NAMES}
_SPELLED[b"TE"] = b"te"


_NONE_TRIED: frozenset[Server] = frozenset()


class UpstreamFailed(Exception):
    """The server failed before its response started; `retry` if another connection may try."""

    def __init__(self, reason: str, retry: bool = False, status: int = 502):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.status = status


#: Body bytes up to this many are joined to the head in one bytes object and written
#: by one transport.write: uvloop's writelines costs about 0.9 µs more (a memoryview,
#: a write context, writev), more than copying a small body.
SMALL_BODY = 4096


def _pass_on(transport: asyncio.Transport, data: bytes, pos: int, end: int, head: bytes | None) -> int:
    """Write data[pos:end], after `head` if given (one system call for both), without
    copying it unless it is small: a bytes slice of a large read costs page faults.
    Returns its length."""
    count = end - pos
    if head is not None and count <= SMALL_BODY:
        transport.write(head + data[pos:end])
        return count
    body = data if pos == 0 and end == len(data) else memoryview(data)[pos:end]
    if head is None:
        transport.write(body)
    else:
        transport.writelines((head, body))
    return count


class Upstream(asyncio.Protocol):
    """One keep-alive connection to a server; reads the responses of one client at a
    time (`client`), and none while it waits in the pool."""

    __slots__ = ("server", "transport", "client", "idle_since", "reused", "closed", "write_paused", "reading_head",
                 "method", "head", "length", "coding", "rewrite", "left", "chunks", "until_close", "keep",
                 "parser")

    def __init__(self, server: Server):
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: HttpClient | None = None
        self.idle_since = 0.0
        self.reused = False
        self.closed = False
        self.write_paused = False
        self.reading_head = True
        self.method = b""
        self.head = b""  # a response head cut by the end of a read
        self.length: bytes | None = None  # the response's Content-Length, Transfer-Encoding
        self.coding: bytes | None = None
        self.rewrite = False
        self.left = 0
        self.chunks: ChunkedBody | None = None
        self.until_close = False
        self.keep = False
        self.parser: httptools.HttpResponseParser | None = None  # while a head is fed to it

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # --- asyncio ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # pooled: a server speaks only when asked
            self.close()
            return
        if self.reading_head:
            self._response_head(client, data)
        else:
            self._response_body(client, data, 0)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost tells the client

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.client is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        client = self.client
        if client is not None and client.state == BODY and not client.transport.is_closing():
            client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        closed_by_medlb, self.closed = self.closed, True
        client = self.client
        if client is None or closed_by_medlb:
            return  # whoever closed it has dealt with the client
        if self.reading_head:
            client.upstream_failed(self, UpstreamFailed(
                "the server closed the connection without answering" if exc is None else str(exc),
                retry=self.reused))
        elif self.until_close and exc is None:
            self.keep = False
            client.response_done(self)
        else:
            client.response_failed(self)

    # --- httptools callback (a response head) ---------------------------------------------

    def on_headers_complete(self) -> None:
        # Read here: once a message is complete (a 204 ends at its head), llhttp answers
        # True whatever the server's Connection header said.
        self.keep = self.parser.should_keep_alive()  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        if name in _PASSED_OVER:
            return
        name = _SPELLED.get(name) or name.lower()
        if name not in _RESPONSE_NAMES:
            return
        if name == b"content-length":
            self.length = value
        elif name == b"transfer-encoding":
            self.coding = value if self.coding is None else self.coding + b"," + value
        else:
            self.rewrite = True  # hop-by-hop

    # --- the response ---------------------------------------------------------------------

    def _response_head(self, client: "HttpClient", data: bytes) -> None:
        if self.head:
            data, self.head = self.head + data, b""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                client.upstream_failed(self, UpstreamFailed("response head too large"))
            else:
                self.head = data
            return
        end += 4
        head = data[:end]
        self.length = self.coding = None
        self.rewrite = False
        parser = self.parser = httptools.HttpResponseParser(self)
        try:
            parser.feed_data(head)
            status = parser.get_status_code()
            framing = rules.response_framing(self.method, status, self.length, self.coding)
        except (httptools.HttpParserError, ValueError) as exc:
            self.parser = None
            client.upstream_failed(self, UpstreamFailed(f"not a valid HTTP response: {exc}", retry=self.reused))
            return
        if status < 200:  # informational: passed on (but a 101 for an upgrade medlb never asked for)
            if status != 101:
                client.transport.write(head)
            if end < len(data):
                self._response_head(client, data[end:])
            return
        self.parser = None
        self.reading_head = False
        self.keep = self.keep and framing != rules.UNTIL_CLOSE
        self.until_close = framing == rules.UNTIL_CLOSE
        self.chunks = ChunkedBody() if framing == rules.CHUNKED else None
        self.left = framing
        out = client.response_started(self, status, head)
        rest = len(data) - end
        if rest == framing and rest <= SMALL_BODY:  # the usual small answer: head and whole body in one read
            client.transport.write(out + data[end:])
            self.left = 0
            client.moved += rest
            self.server.bytes_to_client += rest
            client.response_done(self)
        elif rest:
            self._response_body(client, data, end, out)
        else:
            client.transport.write(out)
            if framing == 0:
                client.response_done(self)

    def _response_body(self, client: "HttpClient", data: bytes, pos: int, head: bytes | None = None) -> None:
        """Pass on the response body's bytes in data[pos:] (after `head`, if given, in
        the same write); past the body's end, the connection is not reused."""
        size = len(data)
        done = False
        if self.chunks is not None:
            try:
                stop = self.chunks.scan(data, pos)
            except BadChunk:
                client.response_failed(self)
                return
            done = stop is not None
            end = stop if stop is not None else size
        elif self.until_close:
            end = size
        else:
            end = min(size, pos + self.left)
            self.left -= end - pos
            done = not self.left
        count = _pass_on(client.transport, data, pos, end, head)
        client.moved += count
        self.server.bytes_to_client += count
        if done:
            if end < size:
                self.keep = False  # bytes no request asked for
            client.response_done(self)


class ServerPools:
    """Idle keep-alive connections per server (Server objects survive reloads)."""

    def __init__(self) -> None:
        self.idle: dict[Server, list[Upstream]] = {}

    def take(self, server: Server, max_idle: float) -> Upstream | None:
        stack = self.idle.get(server)
        if not stack:
            return None
        now = _clock()
        while stack:
            upstream = stack.pop()
            if not upstream.closed and now - upstream.idle_since < max_idle and not upstream.transport.is_closing():
                upstream.reused = True
                return upstream
            upstream.close()
        return None

    def give(self, upstream: Upstream, limit: int) -> None:
        stack = self.idle.setdefault(upstream.server, [])
        if len(stack) >= limit:
            upstream.close()
            return
        upstream.idle_since = _clock()
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


class RequestHeads:
    """The one llhttp request parser of the process, with its callbacks. Each head is fed
    whole, at once, and llhttp is ready for the next head after it (a head followed by a
    body, or one it refused, gets a new parser): so no idle connection holds a parser
    (about 650 bytes each) and none is made per request. `client` is the connection
    whose head is being read."""

    __slots__ = ("parser", "client")

    def __init__(self) -> None:
        self.client: HttpClient = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)

    def renew(self) -> None:
        self.parser = httptools.HttpRequestParser(self)

    # httptools callbacks: what the exchange needs from the head, and whether the head
    # needs more than the forwarding headers inserted.
    def on_url(self, url: bytes) -> None:
        self.client.target += url

    def on_headers_complete(self) -> None:
        # Read here: once the message is complete, llhttp answers True whatever the
        # request's Connection header said.
        self.client.keep_alive = self.parser.should_keep_alive()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name in _PASSED_OVER:
            return
        name = _SPELLED.get(name) or name.lower()
        if name not in _REQUEST_NAMES:  # most headers: one look-up
            if b"_" in name and rules.is_forwarding_header(name):
                self.client.rewrite = True
            return
        client = self.client
        if name == b"host":
            client.host = value
        elif name == b"content-length" or name == b"transfer-encoding":
            client.framing_seen = True
        elif name != b"cookie":
            client.rewrite = True  # in _REWRITE
        elif client.cookie_name is not None:
            client.rewrite = True
            if client.cookie is None:
                client.cookie = rules.cookie_value(((name, value),), client.cookie_name)


_heads = RequestHeads()


def http_factory(handle: "ServiceHandle", local_port: int) -> "HttpClient":
    return HttpClient(handle, local_port)


class HttpClient(asyncio.Protocol):
    """One client connection: a sequence of request/response exchanges."""

    __slots__ = ("handle", "service", "local_port", "transport", "plain_on_tls", "client_ip", "tls", "counted",
                 "closing", "state", "buf", "deadline", "watch", "moved", "mark", "upstream", "server",
                 "method", "target", "keep_alive", "host", "cookie", "cookie_name", "rewrite", "framing_seen",
                 "left", "chunks", "out_head", "started", "tried", "fresh_only", "attempts",
                 "in_flight", "responding", "close_after", "__weakref__")

    def __init__(self, handle: "ServiceHandle", local_port: int):
        self.handle = handle
        self.service = handle.service
        self.local_port = local_port
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.plain_on_tls = False
        self.client_ip = ""
        self.tls = False
        self.counted = False
        self.closing = False
        self.state = HEAD
        self.buf: bytes | bytearray = b""  # a head still incomplete, or bytes read ahead of their turn
        #: Loop time of the deadline idle_check watches (`watch` says which).
        self.deadline = 0.0
        self.watch = NO_DEADLINE
        self.moved = 0  # body bytes of the current exchange, both ways
        self.mark = -1  # `moved` at the last sweep that saw it change
        self.upstream: Upstream | None = None
        self.server: Server | None = None
        self.in_flight = False  # counted in http_stats.in_flight
        self.responding = False  # the response head was written: medlb can no longer answer
        self.method = self.target = self.host = self.out_head = b""
        self.started = 0.0
        self.cookie_name: bytes | None = None
        self._reset_request()

    def _reset_request(self) -> None:
        """Per-request fields; method, target, host and out_head are emptied when an
        exchange ends (response_done), and `started` is set with each request."""
        self.keep_alive = True
        self.cookie: str | None = None
        self.rewrite = False
        self.framing_seen = False
        self.left = 0
        self.chunks: ChunkedBody | None = None
        self.tried: set[Server] | frozenset[Server] = _NONE_TRIED
        self.fresh_only = False
        self.attempts = 0
        self.responding = False
        self.close_after = False

    # --- asyncio ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not admit(self.service):
            self.closing = True
            transport.close()  # accepted and closed at once, no byte sent
            return
        self.counted = True
        peer = transport.get_extra_info("peername")
        # Interned: the connections from one address share the string.
        self.client_ip = sys.intern(peer[0]) if peer else ""
        self.tls = bool(transport.get_extra_info("tls"))
        transport.set_write_buffer_limits(high=self.service.config.limits.buffer_size)  # type: ignore[attr-defined]
        self.handle.connections.add(self)
        _loop_clock()
        config = self.service.config.http
        assert config is not None
        self._watch(HEAD_DEADLINE, config.header_timeout)

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == BODY and self.upstream is not None and not self.buf:
            self._request_body(data, 0)
        elif state == HEAD and not self.closing:
            if self.buf:
                self.buf += data
                self._request_head(self.buf)
            else:
                self._request_head(data)
        elif not self.closing:
            # Read ahead (a pipelined request, or a body while its server is connected):
            # kept, with reading paused, until its turn.
            self._hold(data)
            self.transport.pause_reading()

    def _hold(self, data: bytes | bytearray) -> None:
        """Keep bytes for later; an idle connection holds no buffer (b"")."""
        if self.buf:
            self.buf += data
        else:
            self.buf = bytearray(data)

    def eof_received(self) -> bool:
        if self.state == HEAD:
            return False  # no request under way: close
        self.keep_alive = False  # half-closed: the exchange under way finishes, then medlb closes
        self.close_after = True
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and not upstream.transport.is_closing():
            upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        upstream = self.upstream
        if upstream is not None:
            upstream.close()  # mid-exchange: the server connection cannot be reused
            self._end_exchange(upstream)
        self._release()

    def _release(self) -> None:
        if not self.counted:
            return
        self.counted = False
        self.service.active -= 1
        self.handle.connections.discard(self)

    def close(self) -> None:
        """Close now; a response being written is cut short where it is."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.upstream is not None:
            self.upstream.close()
        if self.transport is not None:
            self.transport.abort()

    def shutdown(self) -> None:
        """Stop taking requests: close now if idle, else after the current response."""
        self.closing = True
        if self.state == HEAD and self.transport is not None:
            self.transport.close()

    # --- deadlines ----------------------------------------------------------------------

    def _watch(self, what: int, seconds: float = 0.0) -> None:
        self.watch = what
        if seconds:
            self.deadline = _clock() + seconds
        self.mark = -1

    def idle_check(self, now: float) -> None:
        """Called by the listeners' sweep (Listeners._sweep): acts on the deadline or
        the body progress being watched."""
        watch = self.watch
        if watch == NO_DEADLINE or self.closing:
            return
        if watch == BODY_PROGRESS:
            if self.moved != self.mark:
                self.mark, self.deadline = self.moved, now
            elif now - self.deadline >= self._config().body_timeout:
                self._body_timeout()
            return
        if now < self.deadline:
            return
        self.watch = NO_DEADLINE
        if watch == KEEPALIVE and not self.buf:
            self.close()  # no byte of a next request came: close quietly
        elif watch in (HEAD_DEADLINE, KEEPALIVE):
            self._stats().errors["header_timeout"] += 1
            self._error(408, "The request head did not arrive in time.\n")
        elif watch == RESPONSE_DEADLINE and self.upstream is not None:
            self.upstream_failed(self.upstream, UpstreamFailed("no response within server_timeout", status=504))

    def _body_timeout(self) -> None:
        stats = self._stats()
        if self.state == BODY:
            stats.errors["request_body_timeout"] += 1
        else:
            stats.errors["response_body_failed"] += 1
        self.abort()

    def _config(self):  # type: ignore[no-untyped-def]
        config = self.service.config.http
        assert config is not None
        return config

    def _stats(self):  # type: ignore[no-untyped-def]
        stats = self.service.http_stats
        assert stats is not None
        return stats

    # --- a request head -----------------------------------------------------------------

    def _request_head(self, data: bytes | bytearray) -> None:
        end = head_length(data)
        if end is None:
            config = self._config()
            if self.watch == KEEPALIVE:
                # The first byte came; a head that comes whole in one read, as most do,
                # needs no deadline of its own.
                self._watch(HEAD_DEADLINE, config.header_timeout)
            if len(data) > config.max_header_size:
                self._stats().errors["header_too_large"] += 1
                self._error(431, "The request head is too large.\n")
            elif data is not self.buf:
                self._hold(data)
            return
        if end == len(data) and type(data) is bytes:
            head, rest = data, b""  # the usual read: one head, nothing after it
        else:
            head = bytes(data[:end])
            rest = data[end:]
        if data is self.buf:
            self.buf = b""
        service = self.service = self.handle.service  # new requests see a reload
        settings = service.http_settings
        self._reset_request()
        self.cookie_name = settings.cookie_name
        parser = _heads.parser
        _heads.client = self
        refusal: Refusal | None = None
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            _heads.renew()  # medlb drops Upgrade: it is a plain request
        except httptools.HttpParserError:
            _heads.renew()
            refusal = check_request_head(head) or rules.Refusal("bad_request", "The request is not valid HTTP/1.1.\n")
        else:
            if self.framing_seen or not self.keep_alive:
                # llhttp now waits for this head's body, or takes nothing more after a
                # last request: the next head gets a new parser.
                _heads.renew()
        if refusal is None and self.framing_seen:
            refusal = check_request_head(head)
        if refusal is not None:
            self._refuse(refusal)
            return
        if end > settings.max_header_size:
            self._stats().errors["header_too_large"] += 1
            self._error(431, "The request head is too large.\n")
            return
        if head.count(b"\n") - 2 > settings.max_headers:  # header lines: all but the first and the empty one
            self._stats().errors["too_many_headers"] += 1
            self._error(431, f"More than {settings.max_headers} header lines.\n")
            return
        self.method = parser.get_method()
        line_end = head.index(b"\n")  # the request line ends with CRLF, or a bare LF
        self.keep_alive = self.keep_alive and (head.endswith(b" HTTP/1.1\r", 0, line_end)
                                               or head.endswith(b" HTTP/1.1", 0, line_end))
        self._begin(head, rest)

    def _refuse(self, refusal: Refusal) -> None:
        self._stats().errors[refusal.reason] += 1
        self._error(refusal.status, refusal.text)

    def _begin(self, head: bytes, rest: bytes | bytearray) -> None:
        """A request head passed the rules: find its body's framing, then a server."""
        stats = self.service.http_stats
        if self.plain_on_tls:
            self._refuse_plain()
            return
        if self.method == b"CONNECT":
            stats.errors["bad_request"] += 1
            self._error(400, "CONNECT is not served here.\n")
            return
        if self.framing_seen:
            lowered = head.lower()
            if b"\ntransfer-encoding:" in lowered:
                self.chunks = ChunkedBody()
            else:
                start = lowered.index(b"\ncontent-length:") + 16
                self.left = int(head[start:head.index(b"\n", start)].strip(b" \t\r"))
        self.state = BODY if self.chunks is not None or self.left else DONE
        if rest:
            self.buf = bytearray(rest)
        self.out_head = rules.forward_request_head(head, self.client_ip, self.tls, self.host, self.rewrite,
                                                   self.cookie_name)
        self.watch = NO_DEADLINE
        self.started = time.monotonic()
        stats.in_flight += 1
        self.in_flight = True
        self._dispatch()

    def _refuse_plain(self) -> None:
        config = self._config()
        stats = self._stats()
        host = self.host.decode("latin-1")
        if config.redirect_http and host:
            if host.endswith(":80"):
                host = host[:-3]
            location = f"https://{host}{self.target.decode('latin-1')}"
            status = 301 if self.method in (b"GET", b"HEAD") else 308
            stats.errors["redirected_to_https"] += 1
            self._error(status, f"Use {location}\n", extra=[(b"location", location.encode("latin-1"))])
        else:
            stats.errors["plain_http_on_tls"] += 1
            self._error(400, "This port speaks HTTPS: use https://.\n")

    # --- a server for it -------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Take a pooled connection to the chosen server, or start connecting to one."""
        service = self.service
        stats = service.http_stats
        settings = service.http_settings
        routes = settings.routes
        pool_name = rules.route(routes, self.target) if routes else "default"
        while self.attempts < settings.attempts:
            self.attempts += 1
            server = service.server_for_cookie(self.cookie, pool_name) if self.cookie else None
            if server is None or server in self.tried:
                server = service.pick(self.client_ip, self.tried, pool_name)
            if server is None:
                if self.tried:
                    stats.gateway_error(502, "bad_gateway")
                    self._error(502, "The server failed to answer.\n")
                else:
                    service.no_server += 1
                    stats.gateway_error(503, "no_server")
                    self._error(503, "No server is available to take this request.\n")
                return
            upstream = None if self.fresh_only else (self.handle.http_pools or _pools(self.handle)).take(
                server, settings.server_idle_timeout)
            if upstream is not None:
                self._attach(upstream)
                return
            self.transport.pause_reading()
            spawn(self._connect(server))
            return
        stats.gateway_error(502, "bad_gateway")
        self._error(502, "No server accepted the connection.\n")

    async def _connect(self, server: Server) -> None:
        service = self.service
        host, port = server.address_for(self.local_port)
        backend_ssl = self.handle.backend_ssl
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(service.config.limits.connect_timeout):
                transport, upstream = await loop.create_connection(
                    lambda: Upstream(server), host, port, ssl=backend_ssl,
                    server_hostname=(self.handle.backend_server_name or host) if backend_ssl is not None else None)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            server.connect_failures += 1
            log.debug("connect_failed", service=service.name, server=server.name,
                      reason="timeout" if isinstance(exc, TimeoutError) else str(exc))
            self.tried = self.tried | {server}
            if not self.closing:
                self._dispatch()
            return
        if self.closing:  # the client left while medlb was connecting
            transport.close()
            return
        transport.set_write_buffer_limits(high=service.config.limits.buffer_size)  # type: ignore[attr-defined]
        self._attach(upstream)

    def _attach(self, upstream: Upstream) -> None:
        """Send the request head, and what of the body has come, to this server."""
        server = upstream.server
        self.upstream, self.server = upstream, server
        server.add_active(1)
        server.total += 1
        upstream.client = self
        upstream.method = self.method
        upstream.reading_head = True
        head = self.out_head
        server.bytes_to_server += len(head)
        if self.state == BODY and self.buf:
            data, self.buf = bytes(self.buf), b""
            self._request_body(data, 0, head)
        else:
            upstream.transport.write(head)
        if self.state == DONE:  # its answer must start in time
            self.watch = RESPONSE_DEADLINE
            self.deadline = _clock() + self.service.http_settings.server_timeout
        elif not upstream.write_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def _request_sent(self) -> None:
        """The whole request is with the server: its answer must start in time."""
        if self.upstream is not None and self.upstream.reading_head:
            self._watch(RESPONSE_DEADLINE, self._config().server_timeout)

    # --- the request body ------------------------------------------------------------------

    def _request_body(self, data: bytes, pos: int, head: bytes | None = None) -> None:
        """Pass on the request body's bytes in data[pos:] (after `head`, if given, in the
        same write); what follows the body is kept for the next exchange."""
        upstream = self.upstream
        assert upstream is not None
        size = len(data)
        if self.chunks is not None:
            try:
                stop = self.chunks.scan(data, pos)
            except BadChunk:  # nothing of this read is forwarded (nor the head, if it is with it)
                self._stats().errors["bad_request"] += 1
                upstream.close()
                self._end_exchange(upstream)
                self._error(400, "The request body's chunked framing is not valid.\n")
                return
            end = size if stop is None else stop
        else:
            end = min(size, pos + self.left)
            self.left -= end - pos
            stop = end if not self.left else None
        count = _pass_on(upstream.transport, data, pos, end, head)
        self.moved += count
        upstream.server.bytes_to_server += count
        if self.watch == NO_DEADLINE and upstream.reading_head:
            self._watch(BODY_PROGRESS)
        if stop is None:
            return
        self.state = DONE
        if stop < size:
            self._hold(data[stop:])
            self.transport.pause_reading()
        if upstream.reading_head:
            self._request_sent()

    # --- the response, as the server connection reads it -----------------------------------

    def response_started(self, upstream: Upstream, status: int, head: bytes) -> bytes | None:
        """The head the client gets for the server's; the caller writes it."""
        service = self.service
        stats = service.http_stats
        server = upstream.server
        added: rules.Headers = []
        if self.cookie_name is not None:
            value = service.cookie_value(server)
            if value != self.cookie:
                added.append(rules.set_cookie(self.cookie_name, value, service.http_settings.cookie_max_age,
                                              self.tls))
        self.close_after = self.closing or not self.keep_alive or upstream.until_close
        if self.close_after:
            added.append((b"connection", b"close"))
        self.responding = True
        stats.observe(server.name, status, time.monotonic() - self.started)  # type: ignore[union-attr]
        self.watch = BODY_PROGRESS
        self.mark = -1
        return rules.forward_response_head(head, upstream.rewrite, added)

    def response_done(self, upstream: Upstream) -> None:
        """The response has passed whole: pool the server connection, take the next request."""
        if self.state != DONE:
            # The server answered before taking the whole request body: close both.
            upstream.close()
            self._end_exchange(upstream)
            self.close()
            return
        if upstream.keep and not upstream.closed:
            if upstream.transport is not None:
                upstream.transport.resume_reading()  # if the client's buffer had paused it
            self._end_exchange(upstream)
            (self.handle.http_pools or _pools(self.handle)).give(
                upstream, self.service.http_settings.server_idle_connections)
        else:
            upstream.close()
            self._end_exchange(upstream)
        # Ready for the next request on this connection (or close, if this one said so).
        if self.close_after or self.closing:
            self.close()
            return
        self.state = HEAD
        self.moved = 0
        self.responding = False
        # Not held while the connection idles:
        self.out_head = self.target = self.host = self.method = b""
        settings = self.service.http_settings
        if self.buf:
            data, self.buf = self.buf, b""
            self._watch(HEAD_DEADLINE, settings.header_timeout)
            self._request_head(bytes(data))
        else:
            self.watch = KEEPALIVE
            self.deadline = _clock() + settings.keepalive_timeout
        if self.state == HEAD and not self.transport.is_closing():
            self.transport.resume_reading()

    def response_failed(self, upstream: Upstream) -> None:
        """The server connection failed after its response started: close both."""
        self._stats().errors["response_body_failed"] += 1
        upstream.close()
        self._end_exchange(upstream)
        self.abort()

    def upstream_failed(self, upstream: Upstream, failure: UpstreamFailed) -> None:
        """No response came: retry on a new connection if that is safe, else answer."""
        service = self.service
        server = upstream.server
        upstream.close()
        self._release_server(upstream)
        if self.closing:
            return
        # Only a request without a body: what of a body has passed is not kept.
        if failure.retry and not self.framing_seen and self.state == DONE:
            self.fresh_only = True  # a pooled connection the server had closed: try a new one
            self._dispatch()
            return
        self._finish()
        self._stats().gateway_error(failure.status, "gateway_timeout" if failure.status == 504 else "bad_gateway",
                                    server.name)
        log.debug("upstream_failed", service=service.name, server=server.name, reason=failure.reason)
        self._error(failure.status, "The server did not answer in time.\n" if failure.status == 504
                    else "The server failed to answer.\n", server=server.name)

    def _release_server(self, upstream: Upstream) -> None:
        if upstream.client is self:
            upstream.client = None
            upstream.server.add_active(-1)
        if self.upstream is upstream:
            self.upstream = self.server = None

    def _end_exchange(self, upstream: Upstream) -> None:
        self._release_server(upstream)
        self._finish()

    def _finish(self) -> None:
        if self.in_flight:
            self.in_flight = False
            self._stats().in_flight -= 1

    # --- medlb's own answers ------------------------------------------------------------------

    def _error(self, status: int, text: str, server: str = "",
               extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """medlb's own short answer, then close. Nothing if a response has started."""
        self._finish()
        transport = self.transport
        self.closing = True
        self.watch = NO_DEADLINE
        if transport is None or transport.is_closing() or self.responding:
            if transport is not None:
                transport.close()
            return
        body = text.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), *(extra or [])]
        transport.write(f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n".encode()
                        + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body)
        transport.close()
        stats = self.service.http_stats
        if stats is not None:
            stats.requests[(server, f"{status // 100}xx")] += 1
