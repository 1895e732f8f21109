"""Mode http's exchange path without sockets: a client connection and its server
connection fed bytes in turn, with transports that record what is written. Pins what
the hot path's shortcuts must keep: the forwarded heads, the one-read small answer,
and a reload's settings reaching the next request."""

from __future__ import annotations

import asyncio

import yaml

from bench.http_exchange_cost import CountingTransport
from medlb.config import parse_config
from medlb.dataplane import Connections
from medlb.proxy import http
from medlb.proxy.tcp import ServiceHandle
from medlb.runtime import Runtime

RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
            b"Keep-Alive: timeout=5\r\n\r\nok\n")


class Recording(CountingTransport):
    """bench's transport, recording what is written and whether it was closed."""

    def __init__(self, peer: tuple[str, int]):
        super().__init__(peer)
        self.written = b""
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        super().write(data)
        self.written += bytes(data)

    def writelines(self, pieces: list[bytes]) -> None:  # type: ignore[override]
        super().writelines(pieces)
        self.written += b"".join(bytes(piece) for piece in pieces)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _config(**extra: object) -> object:
    service = {"name": "api", "mode": "http", "listen": ["127.0.0.1:8080"], "health": {"type": "none"},
               "servers": [{"name": "a", "address": "127.0.0.1:9"}], **extra}
    return parse_config(yaml.safe_dump({"services": [service]})).config


def _exchange(client: http.HttpClient, upstream: http.Upstream, request: bytes) -> tuple[bytes, bytes]:
    sent = upstream.transport.written  # type: ignore[attr-defined]
    answered = client.transport.written  # type: ignore[attr-defined]
    client.data_received(request)
    to_server = upstream.transport.written[len(sent):]  # type: ignore[attr-defined]
    upstream.data_received(RESPONSE)
    return to_server, client.transport.written[len(answered):]  # type: ignore[attr-defined]


def test_keep_alive_exchanges_forward_heads_and_follow_a_reload():
    async def run() -> None:
        runtime = Runtime()
        runtime.load(_config())
        handle = ServiceHandle(runtime.services["api"], runtime, Connections())
        client = http.HttpClient(handle, 8080)
        client.connection_made(Recording(("192.0.2.7", 5555)))  # type: ignore[arg-type]
        upstream = http.Upstream(runtime.services["api"].server("a"))  # type: ignore[arg-type]
        upstream.connection_made(Recording(("127.0.0.1", 9)))  # type: ignore[arg-type]
        http._pools(handle).give(upstream, 64)

        to_server, to_client = _exchange(client, upstream, b"GET /x HTTP/1.1\r\nHost: h.example\r\n"
                                                           b"X_Forwarded_For: 6.6.6.6\r\nAccept: */*\r\n\r\n")
        assert to_server.startswith(b"GET /x HTTP/1.1\r\nHost: h.example\r\nAccept: */*\r\n")
        assert b"6.6.6.6" not in to_server and b"x-forwarded-for: 192.0.2.7\r\n" in to_server
        assert to_server.endswith(b"\r\n\r\n")
        # Hop-by-hop headers out, the body right after the head.
        assert to_client == b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nok\n"
        assert runtime.services["api"].http_stats.requests[("a", "2xx")] == 1  # type: ignore[union-attr]

        # A reload: the next request on the same connection reads the new service's settings.
        runtime.load(_config(persistence={"type": "cookie", "name": "SRV"}))
        handle.service = runtime.services["api"]
        _, to_client = _exchange(client, upstream, b"GET /y HTTP/1.1\r\nHost: h.example\r\n\r\n")
        assert b"\r\nset-cookie: SRV=" in to_client and to_client.endswith(b"\r\n\r\nok\n")

        # Header lines are counted in the head: one over max_headers is refused.
        runtime.load(_config(http={"max_headers": 2}))
        handle.service = runtime.services["api"]
        _, to_client = _exchange(client, upstream, b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n")
        assert to_client.endswith(b"\r\n\r\nok\n")
        client.data_received(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
        assert client.transport.written.endswith(b"More than 2 header lines.\n")  # type: ignore[attr-defined]

        # HTTP/1.0: answered, then closed; an HTTP/1.1 request on a new connection is kept.
        client = http.HttpClient(handle, 8080)
        client.connection_made(Recording(("192.0.2.7", 5556)))  # type: ignore[arg-type]
        _, to_client = _exchange(client, upstream, b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
        assert b"\r\nconnection: close\r\n" in to_client and client.transport.closed  # type: ignore[attr-defined]
        client = http.HttpClient(handle, 8080)
        client.connection_made(Recording(("192.0.2.7", 5557)))  # type: ignore[arg-type]
        _, to_client = _exchange(client, upstream, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert b"connection: close" not in to_client and not client.transport.closed  # type: ignore[attr-defined]

    asyncio.run(run())


def test_names_passed_over_unlowered_are_none_the_head_callbacks_act_on():
    lowered = {name.lower() for name in http._PASSED_OVER}
    assert not lowered & (http._REQUEST_NAMES | http._RESPONSE_NAMES)
    assert not any(b"_" in name for name in lowered)  # no look-alike of a forwarding header
    assert all(spelled.lower() == name for spelled, name in http._SPELLED.items())
