"""The raw-head and body-framing rules the http proxy uses (medlb.protocols.http),
without sockets: heads rewritten in their bytes say what the parsed-list rules say,
response bodies are delimited as RFC 9112 §6.3 says, and a chunked body's end is
found by its size lines alone, whatever way the bytes are cut."""

from __future__ import annotations

import h11
import pytest

from medlb.protocols.http import (CHUNKED, UNTIL_CLOSE, BadChunk, ChunkedBody, forward_request_head,
                                  forward_response_head, request_headers, response_framing, response_headers)


def parsed(head: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of a request head as h11 reads them (lower-case names)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    return list(conn.next_event().headers)


def reparsed(head: bytes) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in parsed(head)]


REQUESTS = {
    "plain": b"GET /a HTTP/1.1\r\nHost: api.example\r\nAccept: */*\r\n\r\n",
    "no host": b"GET /a HTTP/1.0\r\nAccept: */*\r\n\r\n",
    "hop-by-hop and listed": b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                             b"Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Kept: 2\r\n\r\n",
    "forged forwarding": b"GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\n"
                         b"Forwarded: for=evil\r\n\r\n",
    "cookies": b"GET /a HTTP/1.1\r\nHost: h\r\nCookie: a=1; MEDLBSRV=xyz; b=2\r\nCookie: MEDLBSRV=only\r\n\r\n",
}


@pytest.mark.parametrize("head", list(REQUESTS.values()), ids=list(REQUESTS))
@pytest.mark.parametrize("tls", [False, True])
def test_a_raw_request_head_is_rewritten_as_the_header_rules_say(head, tls):
    host = dict(parsed(head)).get(b"host", b"")
    out = forward_request_head(head, "10.1.2.3", tls, host, rewrite=True, cookie_name=b"MEDLBSRV")
    assert out.split(b"\r\n", 1)[0] == head.split(b"\r\n", 1)[0]  # the request line as it came
    assert reparsed(out) == request_headers(parsed(head), "10.1.2.3", tls, b"MEDLBSRV")


def test_without_anything_to_drop_the_forwarding_headers_are_only_inserted_before_the_end():
    head = REQUESTS["plain"]
    out = forward_request_head(head, "::1", False, b"api.example", rewrite=False, cookie_name=None)
    assert out.startswith(head[:-2]) and out.endswith(b"\r\n\r\n")
    assert reparsed(out) == request_headers(parsed(head), "::1", False, None)


def test_a_response_head_loses_its_hop_by_hop_headers_and_speaks_http_1_1():
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\n"
    out = forward_response_head(head, rewrite=True, added=[(b"connection", b"close")])
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nconnection: close\r\n\r\n"
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    client.receive_data(out)
    response = client.next_event()  # valid HTTP/1.1, and nothing hop-by-hop but medlb's own Connection
    assert response.http_version == b"1.1" and response_headers(response.headers) == list(response.headers)[:-1]
    plain = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    assert forward_response_head(plain, rewrite=False, added=[]) == plain


@pytest.mark.parametrize("method,status,length,coding,framing", [
    (b"GET", 200, b"12", None, 12),
    (b"HEAD", 200, b"12", None, 0),
    (b"GET", 204, None, None, 0),
    (b"GET", 304, b"12", None, 0),
    (b"GET", 200, None, b"chunked", CHUNKED),
    (b"GET", 200, None, b"gzip, Chunked", CHUNKED),
    (b"GET", 200, None, b"gzip", UNTIL_CLOSE),
    (b"GET", 200, None, None, UNTIL_CLOSE),
])
def test_a_response_body_is_delimited_as_rfc_9112_says(method, status, length, coding, framing):
    assert response_framing(method, status, length, coding) == framing


BODY = b"5\r\nhello\r\n1a;name=value\r\n" + b"x" * 26 + b"\r\n0\r\nTrailer-A: 1\r\n\r\n"


@pytest.mark.parametrize("cut", [1, 2, 3, 7, len(BODY)])
def test_a_chunked_body_ends_where_its_last_chunk_and_trailers_end_however_it_is_cut(cut):
    after = b"GET /next HTTP/1.1\r\n\r\n"
    data = BODY + after
    scanner = ChunkedBody()
    pieces = [data[i:i + cut] for i in range(0, len(data), cut)]
    consumed = 0
    for piece in pieces:
        stop = scanner.scan(piece)
        if stop is not None:
            consumed += stop
            break
        consumed += len(piece)
    assert consumed == len(BODY)


def test_a_scan_can_start_inside_a_buffer():
    assert ChunkedBody().scan(b"HEAD" + BODY, 4) == 4 + len(BODY)
    assert ChunkedBody().scan(b"0\r\n\r\n") == 5


@pytest.mark.parametrize("body", [
    b"zz\r\n",  # not hex
    b"-1\r\n",
    b"5\nhello\r\n",  # bare LF after a size
    b"5\r\nhelloX\r\n",  # data longer than its size
    b"11111111111111111\r\n",  # 17 hex digits
    b"5 x\r\n",
], ids=["not hex", "signed", "bare LF", "too long data", "too many digits", "junk after size"])
def test_a_broken_chunked_body_is_refused_at_the_first_wrong_byte(body):
    with pytest.raises(BadChunk):
        ChunkedBody().scan(body)


def test_an_endless_size_line_is_refused():
    scanner = ChunkedBody()
    with pytest.raises(BadChunk):
        for _ in range(10):
            scanner.scan(b"1" + b";" * 4096)

