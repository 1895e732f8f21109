"""Python's share of one http-mode keep-alive exchange, without sockets:

  PYTHONPATH=src python -m bench.http_exchange_cost [exchanges]

An HttpClient and its Upstream are fed a wrk-like request head and an nginx-like
response in turn, with transports that only count writes; prints the best of five
runs in CPU microseconds per exchange (time.process_time). The system calls and the
event loop are left out, so a change to the Python around the heads shows here even on
a machine too loaded for `make bench` to separate two trees.
"""
from __future__ import annotations

import sys
import time

import yaml

from medlb.config import parse_config
from medlb.dataplane import Connections
from medlb.proxy import http
from medlb.proxy.tcp import ServiceHandle
from medlb.runtime import Runtime

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 03:40:00 GMT\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n")


class CountingTransport:
    """What the proxy calls on a transport; writes are only counted."""

    def __init__(self, peer: tuple[str, int]):
        self.peer = peer
        self.writes = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, pieces: object) -> None:
        self.writes += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def service_handle(mode: str, port: int) -> ServiceHandle:
    """A one-server service of `mode` loaded as medlb loads its config, and the handle
    its connections get; the server's address takes no connection."""
    service = {"name": "bench", "mode": mode, "listen": [f"127.0.0.1:{port}"], "health": {"type": "none"},
               "servers": [{"name": "a", "address": "127.0.0.1:9"}]}
    runtime = Runtime()
    runtime.load(parse_config(yaml.safe_dump({"services": [service]})).config)
    return ServiceHandle(runtime.services["bench"], runtime, Connections())


async def main(exchanges: int) -> None:
    handle = service_handle("http", 8080)
    client = http.HttpClient(handle, 8080)
    client.connection_made(CountingTransport(("127.0.0.1", 5555)))  # type: ignore[arg-type]
    upstream = http.Upstream(handle.service.server("a"))  # type: ignore[arg-type]
    upstream.connection_made(CountingTransport(("127.0.0.1", 9)))  # type: ignore[arg-type]
    http._pools(handle).give(upstream, 64)
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(exchanges):
            client.data_received(REQUEST)
            upstream.data_received(RESPONSE)
        best = min(best, (time.process_time() - started) / exchanges * 1e6)
    assert client.transport.writes >= exchanges, "the responses did not reach the client"  # type: ignore[attr-defined]
    print(f"{best:.2f} us per exchange")


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
