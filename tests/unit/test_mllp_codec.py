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


def test_the_demo_engines_ack_of_an_accepted_message_has_no_error_segment():
    """AA with `ERR|||0^...|E` (severity error) told a reader the message had failed."""
    import asyncio

    from medlb.demo import _hl7_engine

    async def exchange() -> bytes:
        server = await _hl7_engine("engine1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(mllp.encode(MSG))
        answer = await reader.readuntil(mllp.END)
        writer.close()
        server.close()
        return answer

    ack = next(event.payload for event in mllp.FrameDecoder(65536).feed(asyncio.run(exchange()))
               if isinstance(event, mllp.Frame))
    parsed = hl7.parse(ack.decode())
    assert str(parsed.segment("MSA")(1)) == "AA" and str(parsed.segment("MSA")(2)) == "C123"
    assert [str(segment(0)) for segment in parsed] == ["MSH", "MSA"]
    assert b"ERR" not in build_ack(parse_header(MSG), "CA", "accepted")


# --- a start byte inside a frame, and the budget for partial frames -------------------

OTHER = MSG.replace(b"C123", b"C456").replace(b"555^", b"999^")


def test_a_start_byte_inside_a_frame_cuts_it_there_and_the_next_message_is_whole():
    # A sender that restarted mid-message: what came before the second 0x0B is refused
    # with its head (to answer it), and the message after it decodes on its own.
    stream = mllp.START_BYTE + MSG[:60] + mllp.encode(OTHER) + mllp.encode(MSG)
    for cut in range(len(stream) + 1):
        decoder = mllp.FrameDecoder(1024)
        events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert [type(e) for e in events] == [mllp.Interrupted, mllp.Frame, mllp.Frame], cut
        assert (events[0].head, events[0].size) == (MSG[:60], 60)
        assert frames(events) == [OTHER, MSG]
        assert all(mllp.START_BYTE not in payload for payload in frames(events))


def test_a_start_byte_inside_an_oversized_frame_resynchronises_there_too():
    big = MSG + b"x" * 5000
    decoder = mllp.FrameDecoder(1000, head_size=100)
    stream = mllp.START_BYTE + big + mllp.encode(OTHER)
    events = []
    for i in range(0, len(stream), 333):
        events += decoder.feed(stream[i:i + 333])
    assert isinstance(events[0], mllp.Oversized) and events[0].head == big[:100]
    assert frames(events) == [OTHER]


def test_a_doubled_start_byte_is_junk_not_an_empty_message():
    decoder = mllp.FrameDecoder(1024)
    events = decoder.feed(mllp.START_BYTE + mllp.encode(MSG))
    assert frames(events) == [MSG] and len(events) == 1
    assert decoder.junk_bytes == 1


def test_partial_frames_share_one_budget_and_a_frame_past_it_is_refused_whole():
    budget = mllp.Budget(limit=1000)
    first, second, third = (mllp.FrameDecoder(950, head_size=100, budget=budget) for _ in range(3))
    assert first.feed(mllp.START_BYTE + MSG + b"a" * 800) == []
    assert budget.held == 906
    # A second partial frame is held while it fits; when it would pass the limit it is
    # refused, what it held is given back, and the rest of it is skipped to its end.
    assert second.feed(mllp.START_BYTE + MSG[:50]) == []
    assert budget.held == 956
    assert second.feed(MSG[50:]) == []
    assert budget.held == 906 and second.buffered <= 1
    refused = second.feed(b"b" * 400 + mllp.END)
    assert [type(e) for e in refused] == [mllp.OverBudget]
    assert refused[0].head == MSG[:100] and refused[0].size == len(MSG) + 400
    # A whole small frame that does not fit is refused too, with its head.
    small = third.feed(mllp.encode(OTHER))
    assert [type(e) for e in small] == [mllp.OverBudget] and small[0].head == OTHER[:100]
    # Once the first frame completes, its bytes are free and frames pass again.
    assert frames(first.feed(mllp.END)) == [MSG + b"a" * 800]
    assert budget.held == 0
    assert frames(third.feed(mllp.encode(OTHER))) == [OTHER]
    assert frames(second.feed(mllp.encode(MSG))) == [MSG]


def test_a_frame_that_fills_the_budget_exactly_is_held_and_one_byte_more_is_not():
    budget = mllp.Budget(limit=len(MSG))
    exact, over = mllp.FrameDecoder(1024, budget=budget), mllp.FrameDecoder(1024, budget=budget)
    assert exact.feed(mllp.START_BYTE + MSG) == [] and budget.held == len(MSG)
    assert [type(e) for e in over.feed(mllp.encode(b"M"))] == [mllp.OverBudget]
    assert frames(exact.feed(mllp.END)) == [MSG]


def test_a_closed_decoder_gives_its_partial_frame_back_to_the_budget():
    budget = mllp.Budget(limit=10_000)
    decoder = mllp.FrameDecoder(5000, budget=budget)
    decoder.feed(mllp.START_BYTE + MSG)
    assert budget.held == len(MSG)
    decoder.close()
    assert budget.held == 0


def test_random_streams_with_stray_start_bytes_never_leak_budget_or_pass_a_start_byte():
    rng = random.Random(11)
    budget = mllp.Budget(limit=3000)
    decoders = [mllp.FrameDecoder(1500, head_size=64, budget=budget) for _ in range(4)]
    alphabet = b"AB|^\r\x1c\x0b"
    for _ in range(400):
        decoder = rng.choice(decoders)
        chunk = bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 700)))
        for event in decoder.feed(chunk):
            if isinstance(event, mllp.Frame):
                assert mllp.START_BYTE not in event.payload and len(event.payload) <= 1500
            else:
                assert isinstance(event, mllp.Refused) and len(event.head) <= 64
        assert 0 <= budget.held <= budget.limit
        # What the budget says is held is what the decoders hold (skipping keeps one byte).
        assert budget.held == sum(d.charged for d in decoders)
        assert all(d.buffered <= d.charged + 1 for d in decoders)
    for decoder in decoders:
        decoder.close()
    assert budget.held == 0
