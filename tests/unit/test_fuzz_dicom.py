"""Properties of the DICOM upper-layer codec (protocols/dicom.py), on any bytes.

Its contract: on bytes PS3.8 does not allow, `ProtocolError` and nothing else; the PDU
reader refuses a PDU from its header and gives the same PDU however the bytes were cut;
the stream tracker never raises; what the codec writes (A-ASSOCIATE-RJ, A-ABORT, the
called AE title rewritten in an A-ASSOCIATE-RQ and restored in the -AC) reads back as
what was written. Requests are also built from random values, so that the parser is
driven past its length checks into every item. `make fuzz` runs these for longer.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from fuzz_strategies import chunked, pieces, tokens
from medlb.protocols import dicom
from medlb.protocols.dicom import AssociateRequest, PresentationContext, ProtocolError

PDU_TYPES = sorted(dicom.PDU_NAMES)

# --- building PDUs from values ------------------------------------------------------------

bytes_of = st.integers(0, 255)
uids = st.lists(st.integers(0, 99_999), min_size=1, max_size=6).map(lambda parts: ".".join(map(str, parts)))


def padded_text(alphabet: str, first: str, max_size: int) -> st.SearchStrategy[str]:
    """Text of 1..max_size characters from `alphabet`, neither starting nor ending with a space."""
    return st.builds(lambda head, tail: (head + tail).rstrip(), st.sampled_from(first),
                     st.text(alphabet, max_size=max_size - 1))


#: Titles as PS3.5 allows them (no backslash, no control character), padding removed.
ae_titles = padded_text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.-", "ABCXYZ019_.-", 16)
version_names = padded_text("".join(map(chr, range(32, 127))), "AZaz09!~", 16)


def item(item_type: int, value: bytes) -> bytes:
    return bytes((item_type, 0)) + len(value).to_bytes(2, "big") + value


def uid_value(uid: str, padded: bool) -> bytes:
    return uid.encode() + (b"\x00" if padded else b"")  # a trailing NUL pad is common


def unknown_items(known: set[int]) -> st.SearchStrategy[list[bytes]]:
    types = st.sampled_from([t for t in range(256) if t not in known])
    return st.lists(st.builds(item, types, st.binary(max_size=12)), max_size=1)


#: Items the parser must skip: at the top level, in a presentation context, in user information.
SKIPPED_ITEMS = unknown_items({0x10, 0x20, 0x50})
SKIPPED_CONTEXT_ITEMS = unknown_items({0x30, 0x40})
SKIPPED_USER_ITEMS = unknown_items({0x51, 0x52, 0x55})


@st.composite
def with_skipped(draw: st.DrawFn, items: list[bytes], skipped: st.SearchStrategy[list[bytes]]) -> bytes:
    """The items in order, with items the parser must skip between them."""
    mixed = []
    for piece in [*items, b""]:
        mixed += draw(skipped) + [piece]
    return b"".join(mixed)


@st.composite
def presentation_contexts(draw: st.DrawFn) -> tuple[PresentationContext, bytes]:
    context = PresentationContext(draw(bytes_of), draw(uids), tuple(draw(st.lists(uids, max_size=2))))
    items = [item(0x30, uid_value(context.abstract_syntax, draw(st.booleans())))]
    items += [item(0x40, uid_value(uid, draw(st.booleans()))) for uid in context.transfer_syntaxes]
    value = bytes((context.id, 0, draw(bytes_of), 0)) + draw(with_skipped(items, SKIPPED_CONTEXT_ITEMS))
    return context, item(0x20, value)


@st.composite
def associate_requests(draw: st.DrawFn, pdu_type: int = dicom.A_ASSOCIATE_RQ) -> tuple[AssociateRequest, bytes]:
    """A request as values, and the bytes a peer would send for it."""
    contexts = draw(st.lists(presentation_contexts(), max_size=3))
    request = AssociateRequest(
        protocol_version=draw(st.integers(0, 0xFFFF)),
        called_ae=draw(ae_titles),
        calling_ae=draw(ae_titles),
        application_context=draw(uids),
        contexts=tuple(context for context, _ in contexts),
        max_pdu_length=draw(st.none() | st.integers(0, 0xFFFFFFFF)),
        implementation_class_uid=draw(st.none() | uids),
        implementation_version_name=draw(st.none() | version_names),
    )
    user = []
    if request.max_pdu_length is not None:
        user.append(item(0x51, request.max_pdu_length.to_bytes(4, "big")))
    if request.implementation_class_uid is not None:
        user.append(item(0x52, uid_value(request.implementation_class_uid, draw(st.booleans()))))
    if request.implementation_version_name is not None:
        user.append(item(0x55, request.implementation_version_name.encode()))
    items = [item(0x10, uid_value(request.application_context, draw(st.booleans())))]
    items += [encoded for _, encoded in contexts]
    items.append(item(0x50, draw(with_skipped(user, SKIPPED_USER_ITEMS))))
    body = (request.protocol_version.to_bytes(2, "big") + bytes(2) + dicom.encode_ae(request.called_ae)
            + dicom.encode_ae(request.calling_ae) + bytes(32) + draw(with_skipped(items, SKIPPED_ITEMS)))
    return request, bytes((pdu_type, 0)) + len(body).to_bytes(4, "big") + body


request_bytes = associate_requests().map(lambda built: built[1])


@st.composite
def damaged(draw: st.DrawFn, pdus: st.SearchStrategy[bytes]) -> bytes:
    """A valid PDU with a few bytes changed, cut, inserted or removed, and often its
    header length made to match again, so the damage is met past the length check."""
    data = bytearray(draw(pdus))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        change = draw(st.sampled_from(["set", "cut", "insert", "delete"]))
        if change == "set" and at < len(data):
            data[at] = draw(bytes_of)
        elif change == "cut":
            del data[at:]
        elif change == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif change == "delete":
            del data[at:at + draw(st.integers(1, 8))]
    if len(data) >= dicom.HEADER_SIZE and draw(st.booleans()):
        data[2:6] = (len(data) - dicom.HEADER_SIZE).to_bytes(4, "big")
    return bytes(data)


def pdu(pdu_type: int, body: bytes) -> bytes:
    return bytes((pdu_type, 0)) + len(body).to_bytes(4, "big") + body


any_pdu = st.builds(pdu, st.sampled_from(PDU_TYPES) | bytes_of, st.binary(max_size=40))
any_stream = st.one_of(st.binary(max_size=200), st.lists(any_pdu, max_size=5).map(b"".join),
                       tokens(*(bytes((t, 0)) for t in PDU_TYPES), bytes(4), b"\x00\x00\x00\x04"))

# --- the A-ASSOCIATE-RQ parser -------------------------------------------------------------


def assert_readable(request: AssociateRequest) -> None:
    """What routing, logs and labels use is bounded and printable, whatever was sent."""
    for title in (request.called_ae, request.calling_ae):
        assert len(title) <= 16 and title.isprintable() and title == title.strip()
    assert all(0 <= context.id <= 255 for context in request.contexts)


@given(associate_requests())
def test_a_request_built_from_values_parses_to_those_values(built):
    request, encoded = built
    assert dicom.parse_associate_rq(encoded) == request


@given(st.one_of(damaged(request_bytes), st.binary(min_size=dicom.ITEMS_START, max_size=200)))
def test_a_damaged_request_raises_protocol_error_or_parses_to_readable_values(data):
    try:
        request = dicom.parse_associate_rq(data)
    except ProtocolError as error:
        assert str(error)
        return
    assert_readable(request)


@given(associate_requests(), ae_titles)
def test_rewriting_the_called_ae_changes_that_title_and_no_other_byte(built, title):
    request, encoded = built

    rewritten = dicom.rewrite_called_ae(encoded, title)

    assert dicom.parse_associate_rq(rewritten) == dataclasses.replace(request, called_ae=title)
    assert rewritten[:dicom.CALLED_AE.start] == encoded[:dicom.CALLED_AE.start]
    assert rewritten[dicom.CALLED_AE.stop:] == encoded[dicom.CALLED_AE.stop:]
    assert dicom.replace_called_ae(rewritten, encoded[dicom.CALLED_AE]) == encoded


@given(associate_requests(dicom.A_ASSOCIATE_AC), ae_titles, st.binary(min_size=16, max_size=16))
def test_the_called_ae_restored_in_an_accept_is_the_clients_field_byte_for_byte(built, server_title, client_field):
    _, accept = built
    from_server = dicom.rewrite_called_ae(accept, server_title)

    restored = dicom.replace_called_ae(from_server, client_field)

    assert restored == accept[:dicom.CALLED_AE.start] + client_field + accept[dicom.CALLED_AE.stop:]


@given(st.one_of(damaged(request_bytes), st.binary(max_size=100)), st.binary(max_size=20))
def test_replacing_the_called_ae_in_any_bytes_refuses_or_keeps_the_length(data, field):
    try:
        replaced = dicom.replace_called_ae(data, field)
    except ValueError:  # ProtocolError for the PDU, ValueError for a field that is not 16 bytes
        return
    assert len(replaced) == len(data) and replaced[dicom.CALLED_AE] == field


# --- AE titles -------------------------------------------------------------------------------


@given(st.binary(min_size=16, max_size=16))
def test_any_received_title_decodes_to_printable_text(field):
    title = dicom.decode_ae(field)
    assert len(title) <= 16 and title.isprintable() and title == title.strip(" ")


@given(st.text(max_size=20) | ae_titles)
def test_encoding_a_title_refuses_or_writes_16_bytes_that_decode_to_it(title):
    try:
        field = dicom.encode_ae(title)
    except ValueError:
        return
    assert len(field) == 16
    if all(" " <= c <= "~" and c != "\\" for c in title.strip()):
        assert dicom.decode_ae(field) == title.strip()


# --- what medlb writes reads back --------------------------------------------------------------


@given(bytes_of, bytes_of, bytes_of)
def test_a_rejection_medlb_writes_reads_back_as_the_same_codes(result, source, reason):
    written = dicom.associate_rj(result, source, reason)

    assert dicom.parse_associate_rj(written) == dicom.Rejection(result, source, reason)
    assert dicom.pdu_length(written) == len(written)
    assert dicom.Rejection(result, source, reason).describe().startswith("rejected (")


@given(bytes_of, bytes_of)
def test_an_abort_medlb_writes_reads_back_as_the_same_codes(source, reason):
    written = dicom.a_abort(source, reason)

    assert dicom.parse_abort(written) == dicom.Abort(source, reason)
    assert dicom.pdu_length(written) == len(written)
    assert dicom.Abort(source, reason).describe().startswith("aborted (")


@given(st.one_of(st.binary(max_size=20), any_pdu))
def test_reading_a_rejection_or_an_abort_from_any_bytes_raises_only_protocol_error(data):
    for parse in (dicom.parse_associate_rj, dicom.parse_abort):
        try:
            parse(data)
        except ProtocolError:
            pass


# --- the PDU reader and the stream tracker -------------------------------------------------------

expected_types = st.none() | st.frozensets(st.sampled_from(PDU_TYPES), min_size=1)


def read(reader: dicom.PduReader, chunks: list[bytes]) -> tuple:
    """What a reader makes of a stream: its first PDU and every byte after it, the
    bytes it is still waiting on, or its refusal."""
    try:
        for index, chunk in enumerate(chunks):
            whole = reader.feed(chunk)
            if whole is not None:
                return "pdu", whole, reader.rest + b"".join(chunks[index + 1:])
    except ProtocolError as error:
        return "refused", type(error), error.abort_reason, str(error)
    return "waiting", reader.buffered


@given(chunked(st.one_of(any_stream, damaged(request_bytes))), st.integers(dicom.HEADER_SIZE, 300), expected_types)
def test_the_reader_gives_the_same_pdu_or_refusal_however_the_bytes_are_cut(stream, max_size, expected):
    whole, chunks = stream

    outcome = read(dicom.PduReader(max_size, expected), chunks)

    assert outcome == read(dicom.PduReader(max_size, expected), [whole])
    if outcome[0] == "pdu":
        _, first, rest = outcome
        assert first + rest == whole
        assert dicom.pdu_length(first) == len(first) <= max_size
        assert expected is None or first[0] in expected
    elif outcome[0] == "refused":  # from the header alone: the body of a refused PDU is never held
        assert read(dicom.PduReader(max_size, expected), [whole[:dicom.HEADER_SIZE]]) == outcome


@given(associate_requests(), st.data())
def test_a_request_read_in_pieces_is_the_request_sent(built, data):
    request, encoded = built
    chunks = data.draw(pieces(encoded + data.draw(st.binary(max_size=20))))

    outcome = read(dicom.PduReader(len(encoded), frozenset({dicom.A_ASSOCIATE_RQ})), chunks)

    assert outcome[0] == "pdu" and dicom.parse_associate_rq(outcome[1]) == request


def track(chunks: list[bytes]) -> tuple[int, int, bool]:
    stream = dicom.PduStream()
    for chunk in chunks:
        stream.feed(chunk)
    return stream.pdus, stream.last_type, stream.at_boundary


@given(chunked(any_stream))
def test_the_stream_tracker_never_raises_and_sees_the_same_boundaries_however_cut(stream):
    whole, chunks = stream
    assert track(chunks) == track([whole])


@given(st.lists(any_pdu, min_size=1, max_size=6), st.data())
def test_the_stream_tracker_counts_each_pdu_and_knows_when_it_is_between_two(pdus, data):
    stream = b"".join(pdus)
    cut = data.draw(st.integers(0, len(pdus[-1]) - 1))

    assert track(data.draw(pieces(stream))) == (len(pdus), pdus[-1][0], True)
    partial = track(data.draw(pieces(stream[:len(stream) - len(pdus[-1]) + cut])))
    assert partial[2] == (cut == 0)
