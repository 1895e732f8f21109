"""MLLP framing and the HL7 fields medlb reads, without sockets."""

from __future__ import annotations

import random

import hl7
import pytest

from medlb.protocols import mllp
from medlb.protocols.hl7 import HL7Error, build_ack, field_value, parse_ack, parse_header

MSG = b"MSH|^~\\&|ADT|HOSP|ENG|HOSP|20261123||ADT^A01^ADT_A01|C123|P|2.5.1\rPID|1||555^^^HOSP^MR~77^^^SSN||DOE^JANE\r"


def frames(events):
    return [e.payload for e in events if isinstance(e, mllp.Frame)]


def test_frames_split_at_every_possible_point_decode_the_same():
    stream = b"\r\n" + mllp.encode(MSG) + mllp.encode(b"MSH|^~\\&|X") + b"noise" + mllp.encode(MSG)
    for cut in range(len(stream) + 1):
        decoder = mllp.FrameDecoder(1024)
        got = frames(decoder.feed(stream[:cut])) + frames(decoder.feed(stream[cut:]))
        assert got == [MSG, b"MSH|^~\\&|X", MSG], cut
        assert decoder.junk_bytes == 2 + 5


def strip_end(payload: bytes) -> bytes:
    """END cannot occur inside a message (nor end one, since the 0x1C would pair with it)."""
    while b"\x1c\r" in payload:
        payload = payload.replace(b"\x1c\r", b"\x1c")
    return payload.rstrip(b"\x1c") or b"A"


def test_random_chunking_never_loses_or_invents_a_frame():
    rng = random.Random(7)
    payloads = [bytes(rng.choice(b"ABC|^\r\x1c") for _ in range(rng.randrange(1, 300))) for _ in range(200)]
    payloads = [strip_end(p) for p in payloads]
    stream = b"".join(mllp.encode(p) for p in payloads)
    decoder = mllp.FrameDecoder(10_000)
    got, position = [], 0
    while position < len(stream):
        step = rng.randrange(1, 50)
        got += frames(decoder.feed(stream[position:position + step]))
        position += step
    assert got == payloads


def test_oversized_frame_is_reported_with_its_head_and_the_stream_stays_in_step():
    big = MSG + b"OBX|" + b"x" * 5000 + b"\r"
    decoder = mllp.FrameDecoder(1000, head_size=100)
    stream = mllp.encode(big) + mllp.encode(MSG)
    events = []
    for i in range(0, len(stream), 333):
        events += decoder.feed(stream[i:i + 333])
    assert isinstance(events[0], mllp.Oversized)
    assert events[0].size == len(big) and events[0].head == big[:100]
    assert frames(events) == [MSG]
    assert decoder.buffered < 1000 + 333


def test_header_fields_are_read_by_hl7_numbering():
    header = parse_header(MSG)
    assert header.control_id == b"C123"
    assert header.message_type == b"ADT^A01^ADT_A01"
    assert header.type_label() == "ADT^A01"
    assert (header.sending_app, header.receiving_app, header.version) == (b"ADT", b"ENG", b"2.5.1")


@pytest.mark.parametrize("path, value", [
    ("PID-3", b"555^^^HOSP^MR~77^^^SSN"), ("PID-3.1", b"555"), ("PID-3.4", b"HOSP"), ("PID-5.2", b"JANE"),
    ("MSH-1", b"|"), ("MSH-2", b"^~\\&"), ("MSH-4", b"HOSP"), ("MSH-10", b"C123"), ("PID-30", b""), ("ZZZ-1", None),
])
def test_field_paths(path, value):
    assert field_value(MSG, path) == value


def test_other_separators_are_honoured():
    message = b"MSH#*~\\&#A#B#C#D#20260101##ORU*R01#ID9#P#2.3\rPID#1##X1*Y#\r"
    assert parse_header(message).control_id == b"ID9"
    assert field_value(message, "PID-3.1") == b"X1"


@pytest.mark.parametrize("bad", [b"", b"PID|1", b"MSH", b"MSHA|x", b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5"])
def test_unreadable_headers_raise_hl7error(bad):
    with pytest.raises(HL7Error):
        parse_header(bad)


def test_random_bytes_raise_only_hl7error():
    rng = random.Random(3)
    for _ in range(2000):
        data = b"MSH" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        try:
            header = parse_header(data)
            field_value(data, "PID-3.1", header)
            parse_ack(data)
        except HL7Error:
            pass


def test_negative_ack_answers_the_message_and_python_hl7_reads_it():
    ack = build_ack(parse_header(MSG), "AE", "no server acknowledged the message")
    parsed = hl7.parse(ack.decode())
    assert str(parsed.segment("MSA")(1)) == "AE"
    assert str(parsed.segment("MSA")(2)) == "C123"
    assert str(parsed.segment("MSH")(3)) == "ENG" and str(parsed.segment("MSH")(5)) == "ADT"  # swapped
    assert str(parsed.segment("MSH")(9)) == "ACK^A01^ACK"
    assert "no server acknowledged" in str(parsed.segment("ERR"))
    assert parse_ack(ack).acked_control_id == b"C123"


def test_negative_ack_text_cannot_break_the_segment_structure():
    ack = build_ack(parse_header(MSG), "AR", "bad|text^with~separators\rand a new segment")
    assert ack.count(b"\r") == 3
    assert parse_ack(ack).code == b"AR"
