"""The DICOM upper layer (PS3.8 §9.3), as much of it as a balancer needs. Sans I/O.

Bytes in, parsed values or bytes out; no sockets, no asyncio, so the proxy and the
tests share one codec and it can be fuzzed without a network.

Why not pynetdicom's PDU classes (measured with pynetdicom 3.0.4 on the development
machine, see tests/unit/test_dicom_codec.py for the same vectors):

- `A_ASSOCIATE_RQ.decode` takes about 60 µs for a one-context request but about 5 ms
  for the 120-context, 13 KB request dcmtk's storescu sends, and it runs on the event
  loop once per association; this parser takes about 9 µs and 0.4 ms for the same two.
- On damaged input it raises KeyError, ValueError, AssertionError or struct.error and
  logs pydicom warnings; this module raises only `ProtocolError`, whose message never
  holds the received bytes.

pynetdicom stays the reference: the unit tests parse its byte-exact vectors and
compare with what pynetdicom decodes. The proxy never re-encodes a PDU: the one change
it makes (the called AE title) is a 16-byte overwrite at a fixed offset, so every item
medlb does not understand (user identity, extended negotiation) passes unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# --- PDU types (PS3.8 table 9-1) --------------------------------------------------------

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

PDU_NAMES = {
    A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ", A_ASSOCIATE_AC: "A-ASSOCIATE-AC", A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    P_DATA_TF: "P-DATA-TF", A_RELEASE_RQ: "A-RELEASE-RQ", A_RELEASE_RP: "A-RELEASE-RP", A_ABORT: "A-ABORT",
}

#: type(1) reserved(1) length(4, big-endian, excludes these six bytes)
HEADER_SIZE = 6
#: Called AE [10:26], calling AE [26:42], reserved [42:74], items from 74 (RQ and AC alike).
CALLED_AE = slice(10, 26)
CALLING_AE = slice(26, 42)
ITEMS_START = 74

# --- A-ASSOCIATE-RJ and A-ABORT codes (PS3.8 §9.3.4, §9.3.8) ----------------------------

RESULT_PERMANENT = 1
RESULT_TRANSIENT = 2
SOURCE_USER = 1
SOURCE_ACSE = 2
SOURCE_PRESENTATION = 3

#: (result, source, reason) medlb sends, named for operators and metrics.
RJ_CALLING_AE_NOT_RECOGNISED = (RESULT_PERMANENT, SOURCE_USER, 3)
RJ_CALLED_AE_NOT_RECOGNISED = (RESULT_PERMANENT, SOURCE_USER, 7)
RJ_PROTOCOL_VERSION = (RESULT_PERMANENT, SOURCE_ACSE, 2)
RJ_CONGESTION = (RESULT_TRANSIENT, SOURCE_PRESENTATION, 1)
RJ_LOCAL_LIMIT = (RESULT_TRANSIENT, SOURCE_PRESENTATION, 2)

ABORT_SOURCE_USER = 0
ABORT_SOURCE_PROVIDER = 2
ABORT_NOT_SPECIFIED = 0
ABORT_UNRECOGNISED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_INVALID_PARAMETER = 6

_RESULTS = {1: "permanent", 2: "transient"}
_SOURCES = {1: "service-user", 2: "service-provider (ACSE)", 3: "service-provider (presentation)"}
_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_ABORT_SOURCES = {0: "service-user", 1: "reserved", 2: "service-provider"}
_ABORT_REASONS = {
    0: "reason not specified", 1: "unrecognised PDU", 2: "unexpected PDU", 4: "unrecognised PDU parameter",
    5: "unexpected PDU parameter", 6: "invalid PDU parameter value",
}


class ProtocolError(ValueError):
    """Bytes that PS3.8 does not allow where they came. The message names the problem,
    never the bytes (they may be anything, including patient data).

    `abort_reason` is the A-ABORT reason (source: service-provider) to answer with."""

    def __init__(self, message: str, abort_reason: int = ABORT_INVALID_PARAMETER):
        super().__init__(message)
        self.abort_reason = abort_reason


class PduTooLarge(ProtocolError):
    """A PDU whose declared length is above the configured bound."""

    def __init__(self, declared: int, limit: int):
        super().__init__(f"the PDU declares {declared} bytes, above the limit of {limit}", ABORT_NOT_SPECIFIED)
        self.declared = declared
        self.limit = limit


# --- parsed values -------------------------------------------------------------------


@dataclass(frozen=True)
class PresentationContext:
    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AssociateRequest:
    """What medlb reads from an A-ASSOCIATE-RQ; AE titles with padding removed (and
    made printable, see decode_ae), and whether each was a valid AE title as sent."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[PresentationContext, ...]
    max_pdu_length: int | None = None
    implementation_class_uid: str | None = None
    implementation_version_name: str | None = None
    called_ae_valid: bool = True
    calling_ae_valid: bool = True

    @property
    def abstract_syntaxes(self) -> tuple[str, ...]:
        return tuple(context.abstract_syntax for context in self.contexts)


@dataclass(frozen=True)
class Rejection:
    """The three codes of an A-ASSOCIATE-RJ."""

    result: int
    source: int
    reason: int

    @property
    def transient(self) -> bool:
        return self.result == RESULT_TRANSIENT

    def describe(self) -> str:
        return describe_rejection(self.result, self.source, self.reason)


@dataclass(frozen=True)
class Abort:
    source: int
    reason: int

    def describe(self) -> str:
        source = _ABORT_SOURCES.get(self.source, f"source {self.source}")
        if self.source == ABORT_SOURCE_PROVIDER:
            return f"aborted ({source}: {_ABORT_REASONS.get(self.reason, f'reason {self.reason}')})"
        return f"aborted ({source})"


def describe_rejection(result: int, source: int, reason: int) -> str:
    """`rejected (permanent, service-user, reason 7: called AE title not recognised)`."""
    result_text = _RESULTS.get(result, f"result {result}")
    source_text = _SOURCES.get(source, f"source {source}")
    reason_text = _REASONS.get((source, reason))
    detail = f"reason {reason}: {reason_text}" if reason_text else f"reason {reason}"
    return f"rejected ({result_text}, {source_text}, {detail})"


# --- headers -------------------------------------------------------------------------


def pdu_header(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(type, length of the body) from the first six bytes of a PDU."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError("a PDU header has six bytes", ABORT_NOT_SPECIFIED)
    return data[0], int.from_bytes(data[2:6], "big")


def pdu_length(header: bytes | bytearray | memoryview) -> int:
    """The whole PDU's size in bytes, header included."""
    return HEADER_SIZE + pdu_header(header)[1]


def check_header(pdu_type: int, length: int, max_size: int, expected: frozenset[int] | None) -> None:
    """Raise ProtocolError if a PDU with this header must not be read any further."""
    if pdu_type not in PDU_NAMES:
        raise ProtocolError(f"unknown PDU type 0x{pdu_type:02x}", ABORT_UNRECOGNISED_PDU)
    if expected is not None and pdu_type not in expected:
        wanted = " or ".join(PDU_NAMES[t] for t in sorted(expected))
        raise ProtocolError(f"expected {wanted}, got {PDU_NAMES[pdu_type]}", ABORT_UNEXPECTED_PDU)
    if HEADER_SIZE + length > max_size:
        raise PduTooLarge(HEADER_SIZE + length, max_size)


# --- AE titles -----------------------------------------------------------------------


def decode_ae(field: bytes | bytearray) -> str:
    """An AE title as text: padding (spaces and, defensively, NULs) removed and any byte
    outside printable ASCII shown as '?', so a title is always safe to log and label."""
    text = bytes(field).strip(b" \x00").decode("latin-1")
    return "".join(c if " " <= c <= "~" else "?" for c in text)


#: The bytes an AE title may hold (PS3.5 §6.2, VR AE): the default character repertoire
#: (ISO 646 G0, 0x20-0x7E) without the backslash, which separates values; so no control
#: characters and nothing above 0x7E.
_AE_BYTES = bytes(b for b in range(0x20, 0x7F) if b != 0x5C)


def ae_title_valid(field: bytes | bytearray) -> bool:
    """True if the 16-byte field holds a title PS3.5 allows, padding aside (spaces, and
    NULs as decode_ae reads them). A blank title passes: the allow-list and routes
    decide about it."""
    return not bytes(field).strip(b" \x00").translate(None, _AE_BYTES)


def encode_ae(title: str) -> bytes:
    """The 16-byte, space-padded field for an AE title (PS3.8 §9.3.2)."""
    raw = title.strip().encode("ascii")
    if not 1 <= len(raw) <= 16:
        raise ValueError("an AE title has 1 to 16 characters")
    return raw.ljust(16, b" ")


def replace_called_ae(pdu: bytes, field: bytes) -> bytes:
    """The PDU (A-ASSOCIATE-RQ or -AC) with bytes 10..26 replaced by a 16-byte field.

    The length does not change, so nothing else in the PDU moves."""
    if len(field) != 16:
        raise ValueError("the called AE field has 16 bytes")
    if len(pdu) < ITEMS_START or pdu[0] not in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC):
        raise ProtocolError("not an A-ASSOCIATE-RQ or -AC")
    return pdu[:CALLED_AE.start] + field + pdu[CALLED_AE.stop:]


def rewrite_called_ae(pdu: bytes, title: str) -> bytes:
    """The A-ASSOCIATE-RQ with its called AE title set to `title`."""
    return replace_called_ae(pdu, encode_ae(title))


# --- parsing -------------------------------------------------------------------------


def _uid(data: bytes) -> str:
    # UIDs are digits and dots; trailing NUL padding is common. Never raise on content.
    return data.rstrip(b"\x00 ").decode("latin-1")


def _items(data: bytes, start: int, end: int, what: str) -> list[tuple[int, int, int]]:
    """(type, value start, value end) of each item between start and end; lengths checked."""
    items = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError(f"{what}: an item header runs past the end")
        item_type = data[pos]
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        value_end = pos + 4 + length
        if value_end > end:
            raise ProtocolError(f"{what}: item 0x{item_type:02x} runs past the end")
        items.append((item_type, pos + 4, value_end))
        pos = value_end
    return items


def _presentation_context(data: bytes, start: int, end: int) -> PresentationContext:
    if end - start < 4:
        raise ProtocolError("a presentation context item is shorter than four bytes")
    context_id = data[start]
    abstract = ""
    transfers: list[str] = []
    for item_type, value_start, value_end in _items(data, start + 4, end, "presentation context"):
        if item_type == 0x30:
            abstract = _uid(data[value_start:value_end])
        elif item_type == 0x40:
            transfers.append(_uid(data[value_start:value_end]))
    return PresentationContext(context_id, abstract, tuple(transfers))


def parse_associate_rq(pdu: bytes) -> AssociateRequest:
    """Parse a whole A-ASSOCIATE-RQ (header included).

    Framing is checked strictly (every length must fit), because routing must not act
    on bytes it misread; content is read liberally (unknown items are skipped, as
    PS3.8 §9.3.1 asks), because the server, not medlb, negotiates.
    """
    if len(pdu) < ITEMS_START:
        raise ProtocolError("an A-ASSOCIATE-RQ has at least 74 bytes")
    pdu_type, length = pdu_header(pdu)
    if pdu_type != A_ASSOCIATE_RQ:
        raise ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02x}", ABORT_UNEXPECTED_PDU)
    if HEADER_SIZE + length != len(pdu):
        raise ProtocolError("the A-ASSOCIATE-RQ's length field does not match its size")
    version = int.from_bytes(pdu[6:8], "big")
    application_context = ""
    contexts: list[PresentationContext] = []
    max_length: int | None = None
    class_uid: str | None = None
    version_name: str | None = None
    for item_type, start, end in _items(pdu, ITEMS_START, len(pdu), "A-ASSOCIATE-RQ"):
        if item_type == 0x10:
            application_context = _uid(pdu[start:end])
        elif item_type == 0x20:
            contexts.append(_presentation_context(pdu, start, end))
        elif item_type == 0x50:
            for sub_type, sub_start, sub_end in _items(pdu, start, end, "user information"):
                if sub_type == 0x51 and sub_end - sub_start == 4:
                    max_length = int.from_bytes(pdu[sub_start:sub_end], "big")
                elif sub_type == 0x52:
                    class_uid = _uid(pdu[sub_start:sub_end])
                elif sub_type == 0x55:
                    version_name = pdu[sub_start:sub_end].decode("latin-1").strip()
    return AssociateRequest(
        protocol_version=version,
        called_ae=decode_ae(pdu[CALLED_AE]),
        calling_ae=decode_ae(pdu[CALLING_AE]),
        called_ae_valid=ae_title_valid(pdu[CALLED_AE]),
        calling_ae_valid=ae_title_valid(pdu[CALLING_AE]),
        application_context=application_context,
        contexts=tuple(contexts),
        max_pdu_length=max_length,
        implementation_class_uid=class_uid,
        implementation_version_name=version_name,
    )


def parse_associate_rj(pdu: bytes) -> Rejection:
    if len(pdu) != 10 or pdu[0] != A_ASSOCIATE_RJ:
        raise ProtocolError("an A-ASSOCIATE-RJ has type 0x03 and ten bytes")
    return Rejection(pdu[7], pdu[8], pdu[9])


def parse_abort(pdu: bytes) -> Abort:
    if len(pdu) != 10 or pdu[0] != A_ABORT:
        raise ProtocolError("an A-ABORT has type 0x07 and ten bytes")
    return Abort(pdu[8], pdu[9])


# --- building ------------------------------------------------------------------------


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """`03 00 00000004 00 R S D`."""
    return bytes((A_ASSOCIATE_RJ, 0, 0, 0, 0, 4, 0, result, source, reason))


def a_abort(source: int = ABORT_SOURCE_PROVIDER, reason: int = ABORT_NOT_SPECIFIED) -> bytes:
    """`07 00 00000004 00 00 S R`."""
    return bytes((A_ABORT, 0, 0, 0, 0, 4, 0, 0, source, reason))


A_RELEASE_RQ_BYTES = bytes((A_RELEASE_RQ, 0, 0, 0, 0, 4, 0, 0, 0, 0))


# --- incremental reading -------------------------------------------------------------


class PduReader:
    """Collects one whole PDU from a byte stream, bounded in size.

    feed() returns the PDU once it is complete, else None; bytes after it are kept in
    `rest`. The header is checked as soon as six bytes are in, so an unknown,
    unexpected or oversized PDU is refused before its body is read (the body of an
    oversized PDU is never held).
    """

    __slots__ = ("max_size", "expected", "_buffer", "_total", "rest")

    def __init__(self, max_size: int, expected: frozenset[int] | None = None):
        self.max_size = max_size
        self.expected = expected
        self._buffer = bytearray()
        self._total = 0  # whole PDU size once the header is known
        self.rest = b""

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> bytes | None:
        buffer = self._buffer
        buffer += data
        if not self._total:
            if len(buffer) < HEADER_SIZE:
                return None
            pdu_type, length = pdu_header(buffer)
            check_header(pdu_type, length, self.max_size, self.expected)
            self._total = HEADER_SIZE + length
        if len(buffer) < self._total:
            return None
        pdu = bytes(buffer[:self._total])
        self.rest = bytes(buffer[self._total:])
        buffer.clear()
        return pdu


class PduStream:
    """Follows PDU boundaries in a relayed stream without keeping the bytes.

    The relay uses it to know, when a peer goes away, whether the association was
    released or aborted already (a close is then normal) and whether the other side is
    between two PDUs (only then can an A-ABORT be sent to it without corrupting a PDU
    it is half way through). Cost per chunk: a subtraction, plus a few operations per
    PDU header; it never raises, whatever the bytes.
    """

    __slots__ = ("_remaining", "_header", "last_type", "pdus")

    def __init__(self) -> None:
        self._remaining = 0
        self._header = b""
        self.last_type = 0
        self.pdus = 0

    @property
    def at_boundary(self) -> bool:
        return not self._remaining and not self._header

    def feed(self, data: bytes) -> None:
        remaining = self._remaining
        size = len(data)
        if remaining >= size:  # the common case: a chunk inside a large P-DATA-TF
            self._remaining = remaining - size
            return
        pos = remaining
        remaining = 0
        header = self._header
        while pos < size:
            if remaining:
                step = min(remaining, size - pos)
                remaining -= step
                pos += step
                continue
            need = HEADER_SIZE - len(header)
            header += data[pos:pos + need]
            pos += need
            if len(header) == HEADER_SIZE:
                self.last_type = header[0]
                self.pdus += 1
                remaining = int.from_bytes(header[2:6], "big")
                header = b""
        self._remaining = remaining
        self._header = header


# --- the association's phases through medlb -----------------------------------------------


class Phase(enum.Enum):
    """Where one client connection's association stands in medlb (proxy/dicom.py)."""

    REQUEST = "request"  # reading the A-ASSOCIATE-RQ, under the ARTIM timer
    NEGOTIATING = "negotiating"  # the request is with a server; the client hears nothing yet
    RELAYING = "relaying"  # a server accepted: bytes relayed both ways, PDU boundaries followed
    CLOSING = "closing"  # medlb answered with an RJ or A-ABORT and waits for the client to close


#: Every legal move, and no other: a request is routed (NEGOTIATING) or refused
#: (CLOSING); a negotiation ends accepted (RELAYING) or refused (CLOSING). RELAYING and
#: CLOSING are final: a relayed association ends by its connections closing.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.REQUEST: frozenset({Phase.NEGOTIATING, Phase.CLOSING}),
    Phase.NEGOTIATING: frozenset({Phase.RELAYING, Phase.CLOSING}),
    Phase.RELAYING: frozenset(),
    Phase.CLOSING: frozenset(),
}

#: PDUs after which either side may close: the association is being released or is over.
ENDING_PDUS = frozenset({A_RELEASE_RQ, A_RELEASE_RP, A_ABORT})


class IllegalTransition(RuntimeError):
    """A move the table does not allow: a bug in medlb, not the peer's doing."""


class Association:
    """One association relayed by medlb: its phase and the PDU boundaries of both directions.

    The I/O class asks it the protocol questions (is the association over; may an
    A-ABORT go to this side now) and moves it through `TRANSITIONS`; it holds no
    bytes of a PDU, so it costs the relay a subtraction per chunk.
    """

    __slots__ = ("phase", "up", "down", "eof_to_server", "eof_to_client")

    def __init__(self) -> None:
        self.phase = Phase.REQUEST
        self.up = PduStream()  # client -> server
        self.down = PduStream()  # server -> client
        self.eof_to_server = False
        self.eof_to_client = False

    def move(self, to: Phase) -> None:
        if to not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"association phase {self.phase.value} cannot become {to.value}")
        self.phase = to

    @property
    def over(self) -> bool:
        """Released, being released, or aborted: either side may now close."""
        return self.up.last_type in ENDING_PDUS or self.down.last_type in ENDING_PDUS

    @property
    def open(self) -> bool:
        """Relaying and neither released nor aborted: a side leaving now is an abort."""
        return self.phase is Phase.RELAYING and not self.over

    def abort_fits(self, towards_server: bool) -> bool:
        """Whether an A-ABORT may be written to that side now: only between two PDUs
        of the stream going to it (else it would land inside a PDU it is reading), and
        not after medlb half-closed towards it."""
        if towards_server:
            return self.up.at_boundary and not self.eof_to_server
        return self.down.at_boundary and not self.eof_to_client

    def aborted(self) -> None:
        """An A-ABORT was sent or the association is given up: it is over for both sides."""
        self.up.last_type = self.down.last_type = A_ABORT
