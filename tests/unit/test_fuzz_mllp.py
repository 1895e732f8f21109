"""Properties of the MLLP frame decoder (protocols/mllp.py), on any bytes.

Its contract: a frame is 0x0B + payload + 0x1C 0x0D; bytes between frames are counted
and dropped; a frame over `max_size` comes out as `Oversized` with its first
`head_size` bytes and its size, and the stream stays in step; the decoder holds about
`max_size` at most, never raises (what a sender sends is not medlb's error), and gives
the same events however the bytes were cut. `make fuzz` runs these for longer.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from fuzz_strategies import chunked, pieces, tokens
from medlb.protocols import mllp

#: Small limits, so that short inputs reach the oversized-frame paths.
max_sizes = st.integers(1, 64)
#: Payloads without a start byte (whose meaning inside a frame is the framing rule's
#: business, issue 11 item 7) and without END (which would end the frame).
payloads = st.binary(max_size=120).map(lambda p: re.sub(rb"\x1c+\r", b"\r", p.replace(b"\x0b", b"")))
#: What a sender may put between frames (a stray newline, noise): anything but a start byte.
junk = st.binary(max_size=12).map(lambda j: j.replace(b"\x0b", b""))
any_stream = st.one_of(st.binary(max_size=300),
                       tokens(mllp.START_BYTE, mllp.END, b"\x1c", b"\r", b"MSH|^~\\&|", b"\x0bMSH|"))


def decode(decoder: mllp.FrameDecoder, chunks: list[bytes]) -> list[mllp.Event]:
    events: list[mllp.Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
        assert decoder.buffered <= decoder.max_size + len(mllp.END)
    return events


@given(chunked(any_stream), max_sizes, st.data())
def test_any_bytes_cut_anywhere_decode_to_the_same_events_and_never_raise(stream, max_size, data):
    whole, chunks = stream
    head_size = data.draw(st.integers(1, max_size))
    at_once = mllp.FrameDecoder(max_size, head_size)
    in_pieces = mllp.FrameDecoder(max_size, head_size)

    assert decode(in_pieces, chunks) == decode(at_once, [whole])
    assert in_pieces.junk_bytes == at_once.junk_bytes
    assert in_pieces.idle == at_once.idle


@given(st.lists(st.tuples(junk, payloads), max_size=8), junk, max_sizes, st.data())
def test_frames_come_out_as_sent_whatever_the_junk_and_the_cuts(framed, tail, max_size, data):
    head_size = data.draw(st.integers(1, max_size))
    stream = b"".join(before + mllp.encode(payload) for before, payload in framed) + tail
    decoder = mllp.FrameDecoder(max_size, head_size)

    events = decode(decoder, data.draw(pieces(stream)))

    assert events == [mllp.Frame(payload) if len(payload) <= max_size else mllp.Oversized(payload[:head_size],
                                                                                           len(payload))
                      for _, payload in framed]
    assert decoder.junk_bytes == sum(len(before) for before, _ in framed) + len(tail)
    assert decoder.idle


@given(payloads)
def test_an_encoded_payload_decodes_to_itself(payload):
    assert mllp.FrameDecoder(len(payload) + 1).feed(mllp.encode(payload)) == [mllp.Frame(payload)]


def test_the_head_of_an_oversized_frame_does_not_depend_on_the_cuts_with_the_default_head_size():
    payload = b"MSH|^~\\&|" + b"x" * 3000
    stream = mllp.encode(payload)

    at_once = mllp.FrameDecoder(1024).feed(stream)
    in_pieces = decode(mllp.FrameDecoder(1024), [stream[:1500], stream[1500:]])

    assert at_once == [mllp.Oversized(payload, len(payload))]
    assert in_pieces == at_once
