"""Properties of the HTTP request head rules (protocols/http.py), on any bytes.

Their contract: no exception for any input; a refusal is always a 400 with a fixed
text (never the request's bytes); the verdict on a head does not depend on what
follows it; a head that states its body length in exactly one unambiguous way passes,
and every other framing is refused; and whatever passes, h11 (the parser that reads
the head afterwards) frames the same way: by one Content-Length or by chunked, never
both. `make fuzz` runs these for longer.
"""

from __future__ import annotations

import h11
from hypothesis import given
from hypothesis import strategies as st

from fuzz_strategies import tokens
from medlb.protocols import http

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(TOKEN_CHARS, min_size=1, max_size=20).map(str.encode).filter(
    lambda n: n.lower() not in (b"content-length", b"transfer-encoding"))
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30).map(str.encode)
other_headers = st.lists(st.tuples(names, values), max_size=6)
any_head = st.one_of(st.binary(max_size=300),
                     tokens(b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.0\r\n", b"\r\n", b"\n", b" ", b"\t", b":",
                            b"Content-Length: 5", b"Transfer-Encoding: chunked", b"transfer-encoding:", b"0"))


def head(request_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    return request_line + b"\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"


@given(any_head, st.binary(max_size=40))
def test_any_bytes_get_a_verdict_that_ignores_what_follows_the_head(data, after):
    verdict = http.check_request_head(data)
    assert verdict is None or (verdict.status == 400 and verdict.text.endswith("\n"))
    end = http.head_length(data)
    if end is not None:
        assert http.head_length(data + after) == end
        assert http.check_request_head(data[:end] + after) == http.check_request_head(data[:end])


@given(st.binary(max_size=60))
def test_a_header_name_never_raises(name):
    assert http.is_forwarding_header(name) in (True, False)


@given(st.sampled_from(sorted(http.FORWARDING_HEADERS)), st.data())
def test_every_spelling_of_a_forwarding_header_is_recognised(name, data):
    spelled = b"".join(data.draw(st.sampled_from([c, c.upper(), b"_" if c == b"-" else c]))
                       for c in (name[i:i + 1] for i in range(len(name))))
    assert http.is_forwarding_header(spelled)


@given(names)
def test_other_names_are_not_forwarding_headers(name):
    if name.lower().replace(b"_", b"-") not in http.FORWARDING_HEADERS:
        assert not http.is_forwarding_header(name)


framings = st.sampled_from(["none", "length", "chunked", "both", "two lengths", "other coding", "bad length"])


@given(framings, other_headers, st.booleans(), st.randoms(use_true_random=False))
def test_only_one_unambiguous_body_length_passes(framing, headers, http10, rnd):
    framing_headers = {
        "none": [],
        "length": [(b"Content-Length", b"12")],
        "chunked": [(b"Transfer-Encoding", b"chunked")],
        "both": [(b"Content-Length", b"12"), (b"Transfer-Encoding", b"chunked")],
        "two lengths": [(b"Content-Length", b"12"), (b"content-length", b"12")],
        "other coding": [(b"Transfer-Encoding", b"gzip, chunked")],
        "bad length": [(b"Content-Length", b"+12")],
    }[framing]
    mixed = headers + framing_headers
    rnd.shuffle(mixed)
    request_line = b"POST /x HTTP/1.0" if http10 else b"POST /x HTTP/1.1"
    verdict = http.check_request_head(head(request_line, mixed))
    if framing in ("none", "length") or (framing == "chunked" and not http10):
        assert verdict is None
    else:
        assert verdict is not None and verdict.reason == "ambiguous_length"


@given(framings, other_headers, st.booleans())
def test_a_folded_line_is_refused(framing, headers, tab):
    folded = head(b"GET / HTTP/1.1", [*headers, (b"X-A", b"1")])
    folded = folded[:-2] + (b"\t" if tab else b" ") + b"continued\r\n\r\n"
    assert http.check_request_head(folded) == http.OBS_FOLD


#: Heads made of whole lines, many of them about framing, in any order and case.
framing_lines = st.sampled_from([b"Content-Length: 5", b"content-length:5", b"Content-Length: 5, 5",
                                 b"Content-Length: 05", b"Transfer-Encoding: chunked", b"transfer-encoding: CHUNKED",
                                 b"Transfer-Encoding: gzip", b"Transfer-Encoding:", b" chunked", b"\tchunked",
                                 b"Transfer-Encoding : chunked", b"Host: a", b"X: y"])
line_heads = st.tuples(st.sampled_from([b"POST / HTTP/1.1", b"POST / HTTP/1.0", b"GET / HTTP/1.1"]),
                       st.lists(st.one_of(framing_lines, names.map(lambda n: n + b": v")), max_size=6),
                       st.sampled_from([b"\r\n", b"\n"])).map(
    lambda parts: parts[0] + parts[2] + b"Host: a" + parts[2] + b"".join(line + parts[2] for line in parts[1]) + parts[2])


@given(st.one_of(any_head, line_heads))
def test_what_passes_is_framed_by_h11_in_one_way_only(data):
    """A head medlb lets through is one that h11 reads with at most one of the two
    framings; a disagreement here is exactly a smuggling hole."""
    end = http.head_length(data)
    if end is None or http.check_request_head(data) is not None:
        return
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(bytes(data[:end]))
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return  # refused by the parser after the rules: nothing is forwarded either
    if isinstance(event, h11.Request):
        header_names = [name for name, _ in event.headers]
        assert not (b"content-length" in header_names and b"transfer-encoding" in header_names)
        assert header_names.count(b"content-length") <= 1
