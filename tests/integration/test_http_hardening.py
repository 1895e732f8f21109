"""mode: http against hostile clients: request smuggling (a head whose body length two
parsers could read differently is refused with 400 and never forwarded), forwarding
header look-alikes, and slowloris (a head must arrive whole within header_timeout)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers import LOOPBACK, PEERS, free_ports, http_service, server, wait_until

HEADER_TIMEOUT = 2.0
DRIBBLE_EVERY = 0.5


def _start_length_server(backends, name: str, port: int, log: Path) -> None:
    """tests/peers/length_http_server.py: frames bodies by Content-Length only."""
    backends.start_process(name, [sys.executable, str(PEERS / "length_http_server.py"), "--name", name,
                                  "--port", str(port), "--log", str(log)])


def _exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send data, read until medlb closes: (what came back, closed by medlb)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    sock.sendall(data)
    received = b""
    try:
        while piece := sock.recv(65536):
            received += piece
        closed = True
    except TimeoutError:
        closed = False
    sock.close()
    return received, closed


def _get(port: int, path: str) -> bytes:
    """One request on its own connection; the response body."""
    received, _ = _exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return received.partition(b"\r\n\r\n")[2]


# A second request hidden in a chunk. A server framing by Content-Length reads only the
# chunk-size line as the body, then answers `POST /smuggled` on the same connection
# (its Content-Length: 7 swallows the chunked terminator "\r\n0\r\n\r\n").
SMUGGLED = b"POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n"
CHUNKED_BODY = b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"
SIZE_LINE = len(b"%x\r\n" % len(SMUGGLED))

ATTACKS = {
    "content-length and transfer-encoding": (
        b"POST /attack HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % SIZE_LINE,
        "ambiguous_length"),
    "transfer-encoding first": (
        b"POST /attack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % SIZE_LINE,
        "ambiguous_length"),
    "transfer-encoding as an obs-fold continuation": (
        b"POST /attack HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
        % SIZE_LINE, "obs_fold"),
}


@pytest.mark.parametrize("head,reason", list(ATTACKS.values()), ids=list(ATTACKS))
def test_a_smuggled_request_is_refused_and_never_reaches_the_server(medlb, backends, tmp_path, head, reason):
    vip, pa = free_ports(2)
    log = tmp_path / "requests.log"
    _start_length_server(backends, "A", pa, log)
    lb = medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"})])
    assert _get(vip, "/warm") == b"A GET /warm"  # a pooled connection to the server now exists

    answer, closed = _exchange(vip, head + CHUNKED_BODY)
    assert answer.startswith(b"HTTP/1.1 400 ") and closed
    assert b"connection: close" in answer.lower()

    # Unfixed, each of these got the answer meant for the request before it.
    innocent = {f"/mine-{i}": _get(vip, f"/mine-{i}") for i in range(6)}
    assert innocent == {path: b"A GET " + path.encode() for path in innocent}
    assert log.read_text().split("\n")[:-1] == ["GET /warm"] + [f"GET /mine-{i}" for i in range(6)]
    assert lb.service("api")["http"]["errors"][reason] == 1


REFUSED = {
    "two content-length lines": b"POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting content-length": b"POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "obs-fold in another header": b"GET /r HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n b\r\n\r\n",
    "transfer-encoding other than chunked": b"POST /r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    "chunked not alone": b"POST /r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("head", list(REFUSED.values()), ids=list(REFUSED))
def test_heads_with_unclear_framing_get_400_and_close(medlb, backends, tmp_path, head):
    vip, pa = free_ports(2)
    log = tmp_path / "requests.log"
    _start_length_server(backends, "A", pa, log)
    lb = medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"})])
    answer, closed = _exchange(vip, head)
    assert answer.startswith(b"HTTP/1.1 400 ") and closed
    assert _get(vip, "/after") == b"A GET /after"
    assert log.read_text() == "GET /after\n"
    assert sum(lb.service("api")["http"]["errors"].values()) == 1


def test_an_invalid_chunk_size_gets_400_and_close_and_nothing_reaches_the_server(medlb, backends, tmp_path):
    vip, pa = free_ports(2)
    log = tmp_path / "requests.log"
    _start_length_server(backends, "A", pa, log)
    lb = medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"})])
    assert _get(vip, "/warm") == b"A GET /warm"  # a pooled connection to the server now exists

    answer, closed = _exchange(vip, b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"3x\r\nabc\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and closed
    assert _get(vip, "/after") == b"A GET /after"
    assert log.read_text().split("\n")[:-1] == ["GET /warm", "GET /after"]
    assert lb.service("api")["http"]["errors"]["bad_request"] == 1


def test_forwarding_header_lookalikes_are_dropped(medlb, backends):
    vip, pa = free_ports(2)
    backends.start_http("A", pa)
    lb = medlb([http_service("api", vip, [server("a", pa)])])
    lb.wait_health("api", "a", "up", 10)
    echoed = httpx.get(f"http://{LOOPBACK}:{vip}/headers", timeout=10, headers={
        "X_Forwarded_For": "6.6.6.6", "x_forwarded-proto": "https", "X-Forwarded_Host": "evil.example",
        "Forwarded_": "x", "X_Custom": "kept"}).json()["headers"]
    assert echoed["x-forwarded-for"] == "127.0.0.1"
    assert echoed["x-forwarded-proto"] == "http"
    assert not any(name.replace("_", "-") in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")
                   and "_" in name for name in echoed)
    assert echoed["forwarded_"] == "x"  # not a look-alike of Forwarded: passed on
    assert echoed["x_custom"] == "kept"


# --- slowloris ------------------------------------------------------------------------

HEAD = b"GET /name HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\nAccept: */*\r\n\r\n"
#: medlb must have answered 408 by then: header_timeout, one sweep (1/8 of it) and a
#: generous allowance for a loaded machine; the dribble itself would take 30 s.
CUT_WITHIN = HEADER_TIMEOUT * 2 + 5.0


async def _dribble(port: int, prefix: bytes = b"") -> tuple[bytes | None, int, float]:
    """Send prefix at once, read its response, then HEAD one byte every DRIBBLE_EVERY
    seconds until medlb closes: (what came after prefix's response, bytes of HEAD sent,
    seconds from the first dribbled byte to the close).

    What came is None if the connection was reset: a byte the client sent just as medlb
    closed draws a reset that can overtake the 408 (the counter still shows the 408)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    if prefix:
        writer.write(prefix)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        await reader.readexactly(_content_length(head))
    started = time.monotonic()
    sent = 0
    reading = asyncio.ensure_future(reader.read())
    while sent < len(HEAD) and not reading.done():
        try:
            writer.write(HEAD[sent:sent + 1])
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        await asyncio.wait({reading}, timeout=DRIBBLE_EVERY)
    received: bytes | None
    try:
        received = await asyncio.wait_for(reading, timeout=CUT_WITHIN)
    except ConnectionResetError:
        received = None
    elapsed = time.monotonic() - started
    writer.close()
    return received, sent, elapsed


def _content_length(head: bytes) -> int:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    raise AssertionError(f"no content-length in {head!r}")


def _read_response(sock: socket.socket) -> bytes:
    """One whole response (framed by Content-Length) from a kept-alive connection."""
    received = b""
    while b"\r\n\r\n" not in received:
        piece = sock.recv(65536)
        assert piece, f"closed after {received!r}"
        received += piece
    head, _, body = received.partition(b"\r\n\r\n")
    while len(body) < _content_length(head):
        piece = sock.recv(65536)
        assert piece, f"closed after {received!r}"
        body += piece
    return head + b"\r\n\r\n" + body


def _slow_lb(medlb, backends, **http):
    vip, pa = free_ports(2)
    backends.start_http("A", pa)
    lb = medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"},
                             http={"header_timeout": f"{HEADER_TIMEOUT}s", **http})])
    return lb, vip


def test_a_head_dribbled_byte_by_byte_is_cut_with_408(medlb, backends):
    lb, vip = _slow_lb(medlb, backends)
    received, sent, elapsed = asyncio.run(_dribble(vip))
    assert received is not None and received.startswith(b"HTTP/1.1 408 ")
    assert sent < len(HEAD) and elapsed < CUT_WITHIN
    assert lb.service("api")["http"]["errors"]["header_timeout"] == 1
    wait_until(lambda: lb.service("api")["active_connections"] == 0, 5, what="the connection to be released")


def test_a_hundred_dribbling_connections_are_all_closed(medlb, backends):
    lb, vip = _slow_lb(medlb, backends)

    async def hundred() -> list[tuple[bytes, int, float]]:
        return await asyncio.gather(*(_dribble(vip) for _ in range(100)))

    results = asyncio.run(hundred())
    assert all(received is None or received.startswith(b"HTTP/1.1 408 ") for received, _, _ in results)
    assert all(sent < len(HEAD) and elapsed < CUT_WITHIN for _, sent, elapsed in results)
    wait_until(lambda: lb.service("api")["active_connections"] == 0, 5, what="every connection to be released")
    assert lb.service("api")["http"]["errors"]["header_timeout"] == 100  # a 408 written to each
    assert httpx.get(f"http://{LOOPBACK}:{vip}/name", timeout=10).text == "A"


def test_a_second_request_dribbled_on_a_kept_alive_connection_is_cut(medlb, backends):
    lb, vip = _slow_lb(medlb, backends)
    received, sent, elapsed = asyncio.run(_dribble(vip, prefix=HEAD))
    assert received is not None and received.startswith(b"HTTP/1.1 408 ")
    assert sent < len(HEAD) and elapsed < CUT_WITHIN
    wait_until(lambda: lb.service("api")["active_connections"] == 0, 5, what="the connection to be released")


def test_a_slow_head_within_the_limit_and_a_long_keepalive_pause_are_served(medlb, backends):
    lb, vip = _slow_lb(medlb, backends, keepalive_timeout="30s")
    sock = socket.create_connection((LOOPBACK, vip), timeout=10)
    for piece in (HEAD[:10], HEAD[10:30], HEAD[30:]):  # a whole head in about 0.6 s of 2 s
        sock.sendall(piece)
        time.sleep(0.3)
    assert _read_response(sock).endswith(b"\r\n\r\nA")
    # Idle between requests longer than header_timeout: bounded by keepalive_timeout.
    time.sleep(HEADER_TIMEOUT * 1.5)
    sock.sendall(HEAD)
    assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()
    assert lb.service("api")["http"]["errors"].get("header_timeout", 0) == 0


def test_a_client_asking_connection_close_gets_its_answer_then_the_close(medlb, backends, tmp_path):
    # A keep-alive server: the close must come from medlb honouring its client.
    vip, pa = free_ports(2)
    _start_length_server(backends, "A", pa, tmp_path / "requests.log")
    medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"})])

    for _ in range(3):  # and each time: the head reader has no state left from the last
        answer, closed = _exchange(vip, b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"A GET /bye")
        assert b"connection: close" in answer.lower()
        assert closed, "medlb kept the connection open after the client's Connection: close"


def test_a_server_that_said_connection_close_on_a_bodiless_answer_is_not_asked_again(medlb):
    # A 204 ends at its head: llhttp then reports keep-alive whatever the server said.
    # This server answers "204, Connection: close", closes only after a while, and
    # never reads another request on that connection.
    vip, pa = free_ports(2)
    listener = socket.create_server((LOOPBACK, pa))
    seen: list[tuple[bytes, bytes]] = []

    def serve() -> None:
        for answer in (b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                       b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"):
            conn, _ = listener.accept()
            conn.settimeout(3)
            data = b""
            try:
                while b"\r\n\r\n" not in data or (b"Content-Length: 5\r\n" in data
                                                   and len(data.partition(b"\r\n\r\n")[2]) < 5):
                    if not (piece := conn.recv(65536)):
                        break
                    data += piece
            except TimeoutError:
                pass
            head, _, body = data.partition(b"\r\n\r\n")
            seen.append((head.split(b" ", 2)[1], body))
            conn.sendall(answer)
            time.sleep(1.0)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        medlb([http_service("api", vip, [server("a", pa)], health={"type": "none"})])
        first, _ = _exchange(vip, b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 204 ")
        # A body: medlb cannot send this request twice, so a reused dead connection is a 502.
        second, _ = _exchange(vip, b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                   b"Connection: close\r\n\r\nhello")
        assert second.startswith(b"HTTP/1.1 200 "), second
        assert seen == [(b"/first", b""), (b"/second", b"hello")]
    finally:
        thread.join(timeout=5)
        listener.close()
