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
  forward_request_head(...), forward_response_head(...) -> the same rules on raw heads
  response_framing(...)  -> a response body's length, CHUNKED or UNTIL_CLOSE
  ChunkedBody().scan(data) -> where a chunked body ends, reading only its size lines
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Protocol, Sequence

Headers = list[tuple[bytes, bytes]]

#: Hop-by-hop headers (RFC 9110 7.6.1) that are never forwarded. Transfer-Encoding and
#: Content-Length are kept: bodies pass on as they came, framed by them.
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
    forwarded_headers += forwarding_headers(client_ip, tls, host)
    return forwarded_headers


def forwarding_headers(client_ip: str, tls: bool, host: bytes) -> Headers:
    """X-Forwarded-For, -Proto, -Host and the RFC 7239 Forwarded header, from what medlb
    saw itself (`host`: the request's Host value, empty if it had none)."""
    proto = b"https" if tls else b"http"
    ip = client_ip.encode()
    headers = [(b"x-forwarded-for", ip), (b"x-forwarded-proto", proto)]
    if host:
        headers.append((b"x-forwarded-host", host))
    node = b'"[' + ip + b']"' if b":" in ip else ip
    forwarded = b"for=" + node + b";proto=" + proto
    if host:
        forwarded += b';host="' + host.replace(b'"', b"") + b'"'
    headers.append((b"forwarded", forwarded))
    return headers


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


# --- the same rules on raw heads, as the proxy forwards them ------------------------------
#
# The proxy rewrites a head by editing its bytes, not by rebuilding it from a parsed
# list: most heads need only the forwarding headers added before their empty line, and
# rebuilding costs about a microsecond per header. The heads given here have been
# parsed by llhttp already, so their lines end with CRLF and hold no obs-fold.


def _head_lines(head: bytes) -> list[bytes]:
    """The start line and header lines of a head ending with an empty line."""
    return head[:-4].split(b"\r\n")


def _header_line(line: bytes) -> tuple[bytes, bytes]:
    name, _, value = line.partition(b":")
    return name.lower(), value.strip(b" \t")


def _append(head_without_end: bytes, added: Headers) -> bytes:
    return head_without_end + b"".join(b"\r\n" + key + b": " + value for key, value in added) + b"\r\n\r\n"


@lru_cache(maxsize=4096)
def _forwarding_lines(client_ip: str, tls: bool, host: bytes) -> bytes:
    """The forwarding header lines and the empty line, as inserted at a head's end: the
    same few (client, host) pairs come again and again on a keep-alive connection."""
    return _append(b"", forwarding_headers(client_ip, tls, host))


def forward_request_head(head: bytes, client_ip: str, tls: bool, host: bytes, rewrite: bool,
                         cookie_name: bytes | None) -> bytes:
    """A request head as medlb forwards it, by request_headers' rules. `rewrite` is False
    when the caller's parse saw no header to drop or change (no hop-by-hop or
    forwarding header, no Cookie when `cookie_name` is set): then the forwarding
    headers are only added before the empty line."""
    if not rewrite:
        return head[:-4] + _forwarding_lines(client_ip, tls, host)
    added = forwarding_headers(client_ip, tls, host)
    lines = _head_lines(head)
    listed = set()
    for line in lines[1:]:
        name, value = _header_line(line)
        if name == b"connection":
            listed.update(token.strip().lower() for token in value.split(b","))
    kept = [lines[0]]
    for line in lines[1:]:
        name, value = _header_line(line)
        if name in HOP_BY_HOP or name in listed or is_forwarding_header(name):
            continue
        if name == b"cookie" and cookie_name is not None:
            value = strip_cookie(value, cookie_name)
            if not value:
                continue
            line = line.partition(b":")[0] + b": " + value
        kept.append(line)
    return _append(b"\r\n".join(kept), added)


_HOP_BY_HOP_LINE = re.compile(rb"\r\n(?:" + b"|".join(sorted(HOP_BY_HOP)) + rb"):[^\r]*(?=\r\n)", re.IGNORECASE)


def forward_response_head(head: bytes, rewrite: bool, added: Headers) -> bytes:
    """A response head as medlb relays it: hop-by-hop headers out (only looked for when
    `rewrite`: the caller's parse saw one), `added` in, and an HTTP/1.0 status line spoken
    as HTTP/1.1 (medlb frames the response for its client itself)."""
    if head.startswith(b"HTTP/1.0 "):
        head = b"HTTP/1.1 " + head[9:]
    if rewrite:
        head = _HOP_BY_HOP_LINE.sub(b"", head)
    return _append(head[:-4], added) if added else head


#: response_framing's answers besides a length: a chunked body, or one that ends when
#: the server closes the connection.
CHUNKED = -1
UNTIL_CLOSE = -2


def response_framing(request_method: bytes, status: int, content_length: bytes | None,
                     transfer_encoding: bytes | None) -> int:
    """How a response's body is delimited (RFC 9112 §6.3): its length (0: no body),
    CHUNKED or UNTIL_CLOSE. `content_length` is the header's value as llhttp accepted it
    (one number)."""
    if request_method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    if transfer_encoding is not None:
        last = transfer_encoding.rsplit(b",", 1)[-1].strip(b" \t").lower()
        return CHUNKED if last == b"chunked" else UNTIL_CLOSE
    if content_length is not None:
        return int(content_length)
    return UNTIL_CLOSE


class BadChunk(ValueError):
    """A chunked body that is not well formed: its end cannot be known."""


_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")
#: A chunk-size line (with its extensions) or a trailer line longer than this is refused.
MAX_CHUNK_LINE = 8192


class ChunkedBody:
    """Where a chunked body ends, found by reading only its size lines: the chunks'
    data is skipped by count, never decoded, so the body passes on as it came.

    scan(data) -> offset just past the body's end in `data`, or None if the body goes
    on past `data`; raises BadChunk at the first byte that breaks the framing (a size
    that is not hex, a chunk not followed by CRLF, an overlong line). Size lines and the
    CRLF after each chunk must end with CRLF, as h11 and llhttp require (a bare LF there
    is a known way to make two parsers disagree). Trailer fields pass unread.
    """

    __slots__ = ("_state", "_left", "_line", "_trailer")

    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._left = 0  # bytes of chunk data still to skip
        self._line = b""  # a line cut by the end of the last data
        self._trailer = 0  # bytes of trailer lines so far

    def scan(self, data: bytes | bytearray, pos: int = 0) -> int | None:
        end = len(data)
        while pos < end:
            if self._state == self._DATA:
                step = min(self._left, end - pos)
                pos += step
                self._left -= step
                if not self._left:
                    self._state = self._DATA_END
                continue
            newline = data.find(b"\n", pos, pos + MAX_CHUNK_LINE + 2)
            if newline < 0:
                self._line += bytes(data[pos:end])
                if len(self._line) > MAX_CHUNK_LINE:
                    raise BadChunk("chunk line too long")
                return None
            line = self._line + bytes(data[pos:newline])
            self._line = b""
            pos = newline + 1
            if self._state == self._TRAILER:
                if line in (b"", b"\r"):
                    self._state = self._SIZE
                    return pos
                self._trailer += len(line)
                if self._trailer > MAX_CHUNK_LINE:
                    raise BadChunk("trailer too long")
                continue
            if not line.endswith(b"\r"):
                raise BadChunk("chunk line not ended by CRLF")
            line = line[:-1]
            if self._state == self._DATA_END:
                if line:
                    raise BadChunk("chunk data longer than its size")
                self._state = self._SIZE
                continue
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise BadChunk("invalid chunk size")
            size = int(match.group(1), 16)
            if size:
                self._state, self._left = self._DATA, size
            else:
                self._state, self._trailer = self._TRAILER, 0
        return None
