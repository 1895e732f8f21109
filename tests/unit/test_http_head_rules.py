"""The HTTP request head rules (medlb.protocols.http) without sockets: which heads are
refused because two parsers could frame their body differently, and which client
header names never reach a server."""

from __future__ import annotations

import h11
import pytest

from medlb.protocols.http import (BAD_CODING, BAD_LENGTH, BAD_LINE, BOTH_LENGTHS, CODING_ON_1_0, HOP_BY_HOP, OBS_FOLD,
                                  check_request_head, head_length, is_forwarding_header, request_headers,
                                  response_headers, set_cookie)


def head(*lines: str, version: str = "1.1") -> bytes:
    return "\r\n".join([f"POST /x HTTP/{version}", "Host: x", *lines, "", ""]).encode()


ACCEPTED = {
    "no body": head(),
    "content-length": head("Content-Length: 12"),
    "content-length with spaces": head("Content-Length:   12  "),
    "zero": head("Content-Length: 0"),
    "chunked": head("Transfer-Encoding: chunked"),
    "chunked in capitals": head("TRANSFER-ENCODING: Chunked"),
    "bare LF line ends": b"POST /x HTTP/1.1\nHost: x\nContent-Length: 3\n\n",
    "underscore names are only names": head("X_Custom: 1", "Content-Length: 1"),
}

REFUSED = {
    "both, content-length first": (head("Content-Length: 4", "Transfer-Encoding: chunked"), BOTH_LENGTHS),
    "both, transfer-encoding first": (head("Transfer-Encoding: chunked", "Content-Length: 4"), BOTH_LENGTHS),
    "both, zero length": (head("Content-Length: 0", "Transfer-Encoding: chunked"), BOTH_LENGTHS),
    "transfer-encoding folded": (head("Content-Length: 4", "Transfer-Encoding:", " chunked"), OBS_FOLD),
    "transfer-encoding folded after another header": (head("X-A: 1", "\tTransfer-Encoding: chunked"), OBS_FOLD),
    "any folded header": (head("X-Note: a", " b"), OBS_FOLD),
    "gzip": (head("Transfer-Encoding: gzip"), BAD_CODING),
    "gzip then chunked": (head("Transfer-Encoding: gzip, chunked"), BAD_CODING),
    "chunked then gzip": (head("Transfer-Encoding: chunked, gzip"), BAD_CODING),
    "chunked twice in one line": (head("Transfer-Encoding: chunked, chunked"), BAD_CODING),
    "chunked on two lines": (head("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), BAD_CODING),
    "empty transfer-encoding": (head("Transfer-Encoding:"), BAD_CODING),
    "chunked with a parameter": (head("Transfer-Encoding: chunked;x=1"), BAD_CODING),
    "transfer-encoding on HTTP/1.0": (head("Transfer-Encoding: chunked", version="1.0"), CODING_ON_1_0),
    "two equal content-lengths": (head("Content-Length: 3", "Content-Length: 3"), BAD_LENGTH),
    "two different content-lengths": (head("Content-Length: 3", "Content-Length: 4"), BAD_LENGTH),
    "a list of content-lengths": (head("Content-Length: 3, 3"), BAD_LENGTH),
    "a signed content-length": (head("Content-Length: +3"), BAD_LENGTH),
    "a hex content-length": (head("Content-Length: 0x10"), BAD_LENGTH),
    "an empty content-length": (head("Content-Length:"), BAD_LENGTH),
    "a content-length too long for any parser": (head("Content-Length: " + "9" * 19), BAD_LENGTH),
    "space before the colon": (head("Transfer-Encoding : chunked", "Content-Length: 4"), BAD_LINE),
    "no colon": (head("Transfer-Encoding chunked"), BAD_LINE),
}


@pytest.mark.parametrize("data", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_heads_with_one_clear_body_length_pass(data):
    assert head_length(data) == len(data)
    assert check_request_head(data) is None


@pytest.mark.parametrize("data,refusal", list(REFUSED.values()), ids=list(REFUSED))
def test_ambiguous_heads_are_refused_with_400(data, refusal):
    assert check_request_head(data) is refusal
    assert refusal.status == 400


def test_every_refusal_is_a_400_with_a_counter_label_and_a_line_of_text():
    for refusal in (OBS_FOLD, BAD_LINE, BOTH_LENGTHS, BAD_CODING, BAD_LENGTH, CODING_ON_1_0):
        assert refusal.status == 400
        assert refusal.reason.isidentifier() and refusal.text.endswith("\n") and refusal.text.count("\n") == 1


def test_only_the_head_is_judged_not_the_body_after_it():
    data = head("Content-Length: 40") + b"Transfer-Encoding: chunked\r\n folded\r\n"
    assert head_length(data) == len(head("Content-Length: 40"))
    assert check_request_head(data) is None


def test_an_incomplete_head_has_no_length():
    assert head_length(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    assert head_length(b"") is None


def test_the_h11_unfolded_view_hides_what_the_raw_rules_see():
    """Why the rules read raw bytes: h11 joins the fold into one Transfer-Encoding."""
    data = head("Content-Length: 4", "Transfer-Encoding:", " chunked")
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    request = conn.next_event()
    assert (b"transfer-encoding", b"chunked") in list(request.headers)
    assert check_request_head(data) is OBS_FOLD


@pytest.mark.parametrize("name", [b"x-forwarded-for", b"X-Forwarded-For", b"x_forwarded_for", b"X_Forwarded-For",
                                  b"x-forwarded_proto", b"x_forwarded_host", b"forwarded", b"FORWARDED"])
def test_forwarding_headers_and_their_lookalikes_are_never_forwarded(name):
    assert is_forwarding_header(name)


@pytest.mark.parametrize("name", [b"x_custom", b"x-forwarded", b"forwarded_", b"x-forwarded-for2", b"x__forwarded_for",
                                  b"host", b"x-real-ip"])
def test_other_names_pass(name):
    assert not is_forwarding_header(name)


# --- what medlb changes in a forwarded head ---------------------------------------------


def forwarded(headers, client_ip="192.0.2.7", tls=False, cookie_name=b"MEDLBSRV"):
    return request_headers(headers, client_ip, tls, cookie_name)


def test_forwarding_headers_are_medlbs_own_whatever_the_client_sent():
    sent = [(b"host", b"api.example"), (b"x-forwarded-for", b"10.0.0.1"), (b"x_forwarded_for", b"10.0.0.2"),
            (b"forwarded", b"for=10.0.0.3"), (b"x-forwarded-proto", b"https"), (b"accept", b"*/*")]
    assert forwarded(sent) == [
        (b"host", b"api.example"), (b"accept", b"*/*"),
        (b"x-forwarded-for", b"192.0.2.7"), (b"x-forwarded-proto", b"http"), (b"x-forwarded-host", b"api.example"),
        (b"forwarded", b'for=192.0.2.7;proto=http;host="api.example"'),
    ]


def test_an_ipv6_client_over_tls_is_quoted_in_forwarded_and_no_host_means_no_host_parameter():
    headers = dict(forwarded([], client_ip="2001:db8::1", tls=True))
    assert headers[b"forwarded"] == b'for="[2001:db8::1]";proto=https'
    assert headers[b"x-forwarded-proto"] == b"https" and b"x-forwarded-host" not in headers


def test_hop_by_hop_headers_and_those_connection_lists_are_not_forwarded():
    sent = [(b"host", b"h"), (b"connection", b"keep-alive, X-Secret-Hop"), (b"keep-alive", b"timeout=5"),
            (b"x-secret-hop", b"1"), (b"te", b"trailers"), (b"upgrade", b"h2c"), (b"proxy-connection", b"x"),
            (b"trailer", b"x"), (b"transfer-encoding", b"chunked"), (b"content-length", b"3")]
    names = [name for name, _ in forwarded(sent)]
    assert names[:3] == [b"host", b"transfer-encoding", b"content-length"]  # h11 frames the body from these
    assert not set(names) & (HOP_BY_HOP | {b"x-secret-hop"})


def test_hop_by_hop_headers_of_a_response_are_not_relayed():
    assert response_headers([(b"connection", b"close"), (b"content-type", b"text/plain"), (b"keep-alive", b"x"),
                             (b"content-length", b"2")]) == [(b"content-type", b"text/plain"), (b"content-length", b"2")]


def test_medlbs_persistence_cookie_never_reaches_the_server_and_other_cookies_do():
    assert forwarded([(b"cookie", b"a=1; MEDLBSRV=abc")])[0] == (b"cookie", b"a=1")
    assert all(name != b"cookie" for name, _ in forwarded([(b"cookie", b"MEDLBSRV=abc")]))
    assert forwarded([(b"cookie", b"MEDLBSRV=abc")], cookie_name=None)[0] == (b"cookie", b"MEDLBSRV=abc")


def test_the_persistence_cookie_is_http_only_lax_and_secure_only_over_tls():
    assert set_cookie(b"MEDLBSRV", "v1", None, secure=False) == (
        b"set-cookie", b"MEDLBSRV=v1; Path=/; HttpOnly; SameSite=Lax")
    assert set_cookie(b"MEDLBSRV", "v1", 3600.0, secure=True) == (
        b"set-cookie", b"MEDLBSRV=v1; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure")
