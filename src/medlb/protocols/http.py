"""HTTP/1.1 request head rules, sans-I/O: which heads medlb refuses before forwarding
anything, and which client headers it never passes on.

A proxy and the server behind it must agree on where each request ends. Where they can
disagree (Content-Length beside Transfer-Encoding, two Content-Lengths, a header folded
onto the line before), a request body can carry a second request that the server then
answers on a pooled connection shared with other clients: request smuggling. So a head
whose body length is not stated in exactly one unambiguous way is refused with 400 and
the connection closed, as RFC 9112 §6.1 and §6.3 require and HAProxy does by default;
obs-fold anywhere is refused too (RFC 9112 §5.2 allows it, and no client of medlb needs it).

The rules read the head's raw bytes, not a parsed form: a parser that unfolds obs-fold
(h11 does) hides the very line that makes a head ambiguous. They never return or log a
header value, which may hold credentials or patient identifiers.

The head rules after that, what medlb changes in a head it forwards (RFC 9110 §7.6):
hop-by-hop headers dropped both ways, X-Forwarded-* and Forwarded set by medlb alone,
its persistence cookie taken out of the request and set on the response, and the pool
a request's path routes to. proxy/http.py only moves the bytes.

API, for the proxy and for fuzzing (no exception escapes any of these for any bytes):
  head_length(data)      -> length of the head at the start of data, or None if incomplete
  check_request_head(h)  -> Refusal or None, for a whole head (request line to blank line)
  is_forwarding_header(n) -> True for a header name the client may not send to a server
  request_headers(...)   -> the headers of a request as forwarded to a server
  response_headers(h)    -> a server's response headers without the hop-by-hop ones
  cookie_value(h, name), strip_cookie(value, name), set_cookie(name, value, ...)
  route(routes, target)  -> the pool a request target goes to
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

Headers = list[tuple[bytes, bytes]]

#: Hop-by-hop headers (RFC 9110 7.6.1) that are never forwarded. Transfer-Encoding and
#: Content-Length are kept: h11 frames each side's body from them.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"})

#: Headers medlb sets on every forwarded request, replacing any the client sent.
FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})

#: The empty line that ends a head; a bare LF ends lines too (as h11 reads them).
_HEAD_END = re.compile(rb"\n\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(rb"[0-9]{1,18}")  # 18 digits: an exabyte, and always fits an int64


@dataclass(frozen=True)
class Refusal:
    """A head medlb will not forward: answer `status`, close, count `reason`."""

    reason: str  #: the label in medlb_http_errors_total and the API's http.errors
    text: str  #: the one-line body of the answer (never quotes the request)
    status: int = 400


OBS_FOLD = Refusal("obs_fold", "A header is folded over two lines (obs-fold); send each on one line.\n")
BAD_LINE = Refusal("bad_request", "A header line is not 'name: value'.\n")
BOTH_LENGTHS = Refusal("ambiguous_length", "The request has both Content-Length and Transfer-Encoding.\n")
BAD_CODING = Refusal("ambiguous_length", "Transfer-Encoding must be exactly 'chunked'.\n")
BAD_LENGTH = Refusal("ambiguous_length", "Content-Length must be given once, as one number.\n")
CODING_ON_1_0 = Refusal("ambiguous_length", "An HTTP/1.0 request cannot use Transfer-Encoding.\n")


def head_length(data: bytes | bytearray) -> int | None:
    """Bytes of the head that starts `data` (through its empty line), None if the empty
    line has not arrived yet."""
    match = _HEAD_END.search(data)
    return match.end() if match else None


def check_request_head(head: bytes | bytearray) -> Refusal | None:
    """Why this request head must be refused, or None if its framing is unambiguous.

    `head` is the request line and header lines up to the empty line (what head_length
    measures); bytes after it are ignored. Syntax beyond framing (the request line,
    header value characters) is left to the parser that reads the head afterwards.
    """
    end = head_length(head)
    lines = bytes(head[:end] if end is not None else head).split(b"\n")
    lengths = 0
    length_values: list[bytes] = []
    codings: list[bytes] = []
    for line in lines[1:]:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            break
        if line[0] in b" \t":
            return OBS_FOLD
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return BAD_LINE  # includes "Transfer-Encoding : chunked" (RFC 9112 §5.1)
        name = name.lower()
        if name == b"content-length":
            lengths += 1
            length_values.append(value.strip(b" \t"))
        elif name == b"transfer-encoding":
            codings.append(value.strip(b" \t").lower())
    if codings:
        if lengths:
            return BOTH_LENGTHS
        if codings != [b"chunked"]:
            return BAD_CODING
        if lines[0].rstrip(b"\r").endswith(b" HTTP/1.0"):
            return CODING_ON_1_0
    if lengths and (lengths > 1 or not _DIGITS.fullmatch(length_values[0])):
        return BAD_LENGTH
    return None


def is_forwarding_header(name: bytes) -> bool:
    """A header medlb sets itself, or a name a server may read as one: CGI, WSGI and
    many frameworks map both `X-Forwarded-For` and `X_Forwarded_For` to the same
    HTTP_X_FORWARDED_FOR, so the look-alike would let a client claim another address."""
    name = name.lower()
    if b"_" in name:
        name = name.replace(b"_", b"-")
    return name in FORWARDING_HEADERS


# --- what medlb changes in the heads it forwards ------------------------------------------


def request_headers(headers: Iterable[tuple[bytes, bytes]], client_ip: str, tls: bool,
                    cookie_name: bytes | None) -> Headers:
    """A request's headers (lower-case names, as h11 gives them) as medlb forwards them.

    Dropped: hop-by-hop headers and those the client's Connection header lists, any
    forwarding header the client sent (or a look-alike), and medlb's own persistence
    cookie (the server never sees it). Added: X-Forwarded-For, -Proto, -Host and the
    RFC 7239 Forwarded header, from what medlb saw itself.
    """
    headers = list(headers)
    listed = set()
    for key, value in headers:
        if key == b"connection":
            listed.update(token.strip().lower() for token in value.split(b","))
    forwarded_headers: Headers = []
    host = b""
    for key, value in headers:
        if key in HOP_BY_HOP or key in listed or is_forwarding_header(key):
            continue
        if key == b"host":
            host = value
        if key == b"cookie" and cookie_name is not None:
            value = strip_cookie(value, cookie_name)
            if not value:
                continue
        forwarded_headers.append((key, value))
    proto = b"https" if tls else b"http"
    ip = client_ip.encode()
    forwarded_headers.append((b"x-forwarded-for", ip))
    forwarded_headers.append((b"x-forwarded-proto", proto))
    if host:
        forwarded_headers.append((b"x-forwarded-host", host))
    node = b'"[' + ip + b']"' if b":" in ip else ip
    forwarded = b"for=" + node + b";proto=" + proto
    if host:
        forwarded += b';host="' + host.replace(b'"', b"") + b'"'
    forwarded_headers.append((b"forwarded", forwarded))
    return forwarded_headers


def response_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """A server's response headers as medlb relays them: without the hop-by-hop ones."""
    return [(key, value) for key, value in headers if key not in HOP_BY_HOP]


def cookie_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of cookie `name` in the request's Cookie headers, or None."""
    for key, value in headers:
        if key == b"cookie":
            for part in value.split(b";"):
                k, _, v = part.strip().partition(b"=")
                if k == name:
                    return v.decode("latin-1")
    return None


def strip_cookie(value: bytes, name: bytes) -> bytes:
    """A Cookie header's value without cookie `name` (empty if it was the only one)."""
    parts = [p.strip() for p in value.split(b";")]
    return b"; ".join(p for p in parts if p and p.partition(b"=")[0] != name)


def set_cookie(name: bytes, value: str, max_age: float | None, secure: bool) -> tuple[bytes, bytes]:
    """The Set-Cookie header of medlb's persistence cookie: HttpOnly and SameSite=Lax
    (no script needs it), Secure when the client came over TLS."""
    attributes = "; Path=/; HttpOnly; SameSite=Lax"
    if max_age:
        attributes += f"; Max-Age={int(max_age)}"
    if secure:
        attributes += "; Secure"
    return b"set-cookie", name + b"=" + value.encode() + attributes.encode()


class Route(Protocol):
    path_prefix: str
    pool: str


def route(routes: Sequence[Route], target: bytes) -> str:
    """The pool for a request target: the first route (in config order) whose
    `path_prefix` is the path or a parent of it; else the default pool."""
    if not routes:
        return "default"
    path = target.split(b"?", 1)[0].decode("latin-1")
    for item in routes:
        prefix = item.path_prefix
        if path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/"):
            return item.pool
    return "default"
