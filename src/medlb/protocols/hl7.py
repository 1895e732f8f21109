"""Just enough HL7 v2 to balance messages: MSH fields, one field path, MSA, and ACKs.

The balancer never parses a whole message: it reads the MSH (control ID, type,
separators), the one field that is the ordering key, and the MSA of an answer. All of
it works on bytes, since the character set (MSH-18) is the sender's business and a
balancer must pass the message through unchanged. Hand-written rather than
python-hl7 because it runs once per message on the hot path and must accept any
version and any separators; python-hl7 is used in the tests as an independent peer.
"""

from __future__ import annotations

import itertools
import re
import time
from functools import lru_cache
from typing import NamedTuple

SEGMENT_END = b"\r"
_ack_counter = itertools.count(1)


class HL7Error(ValueError):
    """A message medlb cannot read well enough to route or answer."""


class Header(NamedTuple):
    """The MSH fields a balancer needs, as bytes. A named tuple: one is made for every
    message, and a frozen dataclass's ten `object.__setattr__` cost five times as much."""

    field_sep: bytes
    encoding: bytes  # component, repetition, escape, subcomponent separators
    sending_app: bytes
    sending_facility: bytes
    receiving_app: bytes
    receiving_facility: bytes
    message_type: bytes  # MSH-9, e.g. ADT^A01^ADT_A01
    control_id: bytes  # MSH-10
    processing_id: bytes  # MSH-11
    version: bytes  # MSH-12

    @property
    def component_sep(self) -> bytes:
        return self.encoding[:1] or b"^"

    def type_label(self) -> str:
        """`ADT^A01` (message code and trigger event): safe for metrics, no patient data."""
        parts = self.message_type.split(self.component_sep)[:2]
        label = "^".join(p.decode("ascii", "replace") for p in parts if p)
        return re.sub(r"[^A-Za-z0-9_^]", "?", label)[:16] or "unknown"


def _first_line(message: bytes) -> bytes:
    """The MSH segment, found without splitting the whole (possibly huge) message."""
    end = len(message)
    for terminator in (b"\r", b"\n"):
        found = message.find(terminator, 0, end)
        if found >= 0:
            end = found
    return message[:end]


def _find_segment(message: bytes, name: bytes, sep: bytes) -> bytes | None:
    """The first segment called `name` (not MSH), found by search rather than a split."""
    tag = name + sep
    for start_of_line in (b"\r", b"\n"):
        at = message.find(start_of_line + tag)
        if at >= 0:
            start = at + 1
            end = len(message)
            for terminator in (b"\r", b"\n"):
                found = message.find(terminator, start, end)
                if found >= 0:
                    end = found
            return message[start:end]
    return None


def _msh_fields(message: bytes) -> tuple[bytes, list[bytes]]:
    """The field separator and MSH-1..MSH-12 (MSH-n is fields[n - 1]), MSH-10 not empty."""
    if not message.startswith(b"MSH") or len(message) < 8:
        raise HL7Error("the message does not start with an MSH segment")
    sep = message[3:4]
    if sep.isalnum() or sep in (b"\r", b"\n"):
        raise HL7Error("the MSH segment has no valid field separator")
    # MSH-1 is the separator itself, so MSH-n is fields[n - 1]; fields past MSH-12 stay
    # unsplit in the last item.
    fields = _first_line(message).split(sep, 12)
    if len(fields) < 12:
        fields += [b""] * (12 - len(fields))
    if not fields[9]:
        raise HL7Error("MSH-10 (message control ID) is empty")
    return sep, fields


def parse_header(message: bytes) -> Header:
    sep, fields = _msh_fields(message)
    return Header(sep, fields[1], fields[2], fields[3], fields[4], fields[5], fields[8], fields[9], fields[10],
                  fields[11])


#: HL7 counts fields, components and subcomponents from 1: an index 0 would read the
#: segment's name or, through Python's -1, the last component.
_PATH = re.compile(r"^([A-Z][A-Z0-9]{2})-([1-9]\d*)(?:\.([1-9]\d*))?(?:\.([1-9]\d*))?$")


def field_value(message: bytes, path: str, header: Header | None = None) -> bytes | None:
    """The value at `PID-3`, `PID-3.1` or `PID-3.1.2` in the first such segment.

    A whole field keeps its repetitions (PID-3 `123^^^A^MR~456^^^B^PI` as one key);
    a component path reads the first repetition. None when the segment is absent.
    """
    name, field_no, component, sub = _field_path(path)
    header = header or parse_header(message)
    sep = header.field_sep
    segment = _first_line(message) if name == b"MSH" else _find_segment(message, name, sep)
    if segment is None:
        return None
    fields = segment.split(sep, field_no + 1)  # the fields after it stay unsplit
    if name == b"MSH":
        fields.insert(1, sep)  # MSH-1 is the field separator itself, so MSH-n is fields[n]
    index = field_no
    if index >= len(fields):
        return b""
    value = fields[index]
    if component is None:
        return value
    repetition_sep = header.encoding[1:2] or b"~"
    value = value.split(repetition_sep)[0]
    components = value.split(header.component_sep)
    value = components[component] if component < len(components) else b""
    if sub is None:
        return value
    sub_sep = header.encoding[3:4] or b"&"
    subs = value.split(sub_sep)
    return subs[sub] if sub < len(subs) else b""


@lru_cache(maxsize=64)
def _field_path(path: str) -> tuple[bytes, int, int | None, int | None]:
    """`PID-3.1.2` as (segment name, field number, component and subcomponent indexes
    from 0): a service has one ordering key path, read for every message."""
    match = _PATH.match(path)
    if match is None:
        raise ValueError(f"not a field path: {path!r}")
    component, sub = match.group(3), match.group(4)
    return (match.group(1).encode(), int(match.group(2)), None if component is None else int(component) - 1,
            None if sub is None else int(sub) - 1)


class Ack(NamedTuple):
    code: bytes  # MSA-1: AA, AE, AR, CA, CE, CR
    acked_control_id: bytes  # MSA-2


def parse_ack(message: bytes) -> Ack:
    """MSA-1 and MSA-2 of an answer whose MSH is readable (no Header made: one is read
    for every message a server acknowledges)."""
    sep, _ = _msh_fields(message)
    segment = _find_segment(message, b"MSA", sep)
    if segment is None:
        raise HL7Error("the answer has no MSA segment")
    fields = segment.split(sep, 3)
    return Ack(fields[1] if len(fields) > 1 else b"", fields[2] if len(fields) > 2 else b"")


def _clean(text: str, header: Header | None) -> bytes:
    """Text for an ERR or MSA field, with every separator character removed."""
    forbidden = set(b"|^~\\&\r\n")
    if header is not None:
        forbidden |= set(header.field_sep + header.encoding)
    return bytes(b for b in text.encode("ascii", "replace") if b not in forbidden)


def build_ack(header: Header | None, code: str, text: str, error_code: str = "207",
              error_name: str = "Application internal error", sender: bytes = b"MEDLB") -> bytes:
    """A negative (or any) ACK from medlb itself, answering `header`'s message.

    Application and facility are swapped, MSA-2 carries the original control ID, and for
    a negative ACK an ERR segment (HL7 table 0357 code, severity E) says why; an AA or
    CA has none, since an error segment would tell its reader the message failed. With
    no readable header the ACK uses default separators and an empty MSA-2: the sender
    still learns of the refusal.
    """
    sep = header.field_sep if header else b"|"
    encoding = header.encoding if header and header.encoding else b"^~\\&"
    comp = encoding[:1]
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime()).encode()
    control = b"MEDLB" + now + str(next(_ack_counter)).encode()
    trigger = b""
    if header is not None:
        parts = header.message_type.split(comp)
        trigger = parts[1] if len(parts) > 1 else b""
    msh = sep.join([
        b"MSH", encoding,
        header.receiving_app if header and header.receiving_app else sender,
        header.receiving_facility if header else b"",
        header.sending_app if header else b"",
        header.sending_facility if header else b"",
        now, b"", comp.join([b"ACK", trigger, b"ACK"]) if trigger else b"ACK",
        control, header.processing_id if header and header.processing_id else b"P",
        header.version if header and header.version else b"2.5.1",
    ])
    msa = sep.join([b"MSA", code.encode(), header.control_id if header else b"", _clean(text, header)])
    err_code = comp.join([error_code.encode(), _clean(error_name, header), b"HL70357"])
    if code in ("AA", "CA"):
        return SEGMENT_END.join([msh, msa]) + SEGMENT_END
    err = sep.join([b"ERR", b"", b"", err_code, b"E", b"", b"", b"", _clean(text, header)])
    return SEGMENT_END.join([msh, msa, err]) + SEGMENT_END


def make_test_message(control_id: str, processing_id: str = "T", receiver: str = "") -> bytes:
    """The default health-check message: MSH-11 = T (test), a fresh MSH-10 each time."""
    now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    msh = f"MSH|^~\\&|MEDLB|MEDLB|{receiver}||{now}||ADT^A01^ADT_A01|{control_id}|{processing_id}|2.5.1"
    evn = f"EVN|A01|{now}"
    return (msh + "\r" + evn + "\r").encode()
