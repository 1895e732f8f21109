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

API, for the proxy and for fuzzing (no exception escapes any of these for any bytes):
  head_length(data)      -> length of the head at the start of data, or None if incomplete
  check_request_head(h)  -> Refusal or None, for a whole head (request line to blank line)
  is_forwarding_header(n) -> True for a header name the client may not send to a server
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
