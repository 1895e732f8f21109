"""The DICOM upper layer codec: golden vectors from pynetdicom, rewriting, and fuzzing.

pynetdicom's byte-exact PDUs (shipped in its wheel) are the reference: every field
this codec reads is compared with what pynetdicom itself decodes.
"""

from __future__ import annotations

import random
import time

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ as PynetdicomRQ
from pynetdicom.tests import encoded_pdu_items as vectors

from medlb.protocols import dicom
from medlb.protocols.dicom import ProtocolError

RQ_VECTORS = [
    "a_associate_rq", "a_associate_rq_user_async", "a_associate_rq_role", "a_associate_rq_user_id_user_pass",
    "a_associate_rq_user_id_ext_neg",
]


def storescu_like_rq(contexts: int = 120) -> bytes:
    """A large request like dcmtk storescu's (one context per storage SOP class)."""
    from pynetdicom.pdu_primitives import (A_ASSOCIATE, ImplementationClassUIDNotification,
                                           MaximumLengthNotification)
    from pynetdicom.presentation import StoragePresentationContexts, build_context

    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "STORESCU"
    primitive.called_ae_title = "ANY-SCP"
    items = []
    for index, context in enumerate(StoragePresentationContexts[:contexts]):
        built = build_context(context.abstract_syntax,
                              ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"])
        built.context_id = 2 * index + 1
        items.append(built)
    primitive.presentation_context_definition_list = items
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = "1.2.3.4"
    primitive.user_information = [length, uid]
    return PynetdicomRQ(primitive).encode()


@pytest.mark.parametrize("name", RQ_VECTORS)
def test_associate_rq_agrees_with_pynetdicom(name):
    pdu = getattr(vectors, name)
    reference = PynetdicomRQ()
    reference.decode(pdu)

    parsed = dicom.parse_associate_rq(pdu)

    assert parsed.called_ae == reference.called_ae_title.strip()
    assert parsed.calling_ae == reference.calling_ae_title.strip()
    assert parsed.protocol_version == reference.protocol_version
    assert parsed.application_context == str(reference.application_context_name)
    assert [(c.id, c.abstract_syntax, list(c.transfer_syntaxes)) for c in parsed.contexts] == [
        (c.context_id, str(c.abstract_syntax), [str(t) for t in c.transfer_syntax])
        for c in reference.presentation_context]
    info = reference.user_information
    assert parsed.max_pdu_length == info.maximum_length
    assert parsed.implementation_class_uid == str(info.implementation_class_uid)


def test_large_request_agrees_with_pynetdicom_and_parses_quickly():
    pdu = storescu_like_rq()
    reference = PynetdicomRQ()
    reference.decode(pdu)

    parsed = dicom.parse_associate_rq(pdu)
    assert parsed.abstract_syntaxes == tuple(str(c.abstract_syntax) for c in reference.presentation_context)
    assert len(parsed.contexts) == 120
    # Not a timing assertion on the result: a generous bound that only catches a
    # parser gone quadratic (it takes ~0.2 ms; pynetdicom ~5 ms).
    started = time.perf_counter()
    for _ in range(10):
        dicom.parse_associate_rq(pdu)
    assert (time.perf_counter() - started) / 10 < 0.05


def test_blank_ae_titles_parse_as_empty_so_routing_decides():
    # pynetdicom refuses these two vectors outright (PS3.8 forbids an all-space title);
    # medlb reads them, and its allow-list and routes answer with a proper reject.
    assert dicom.parse_associate_rq(vectors.a_associate_rq_called).called_ae == ""
    assert dicom.parse_associate_rq(vectors.a_associate_rq_calling).calling_ae == ""


def test_header_helpers():
    assert dicom.pdu_header(vectors.a_associate_rq[:6]) == (1, len(vectors.a_associate_rq) - 6)
    assert dicom.pdu_length(vectors.a_associate_rq) == len(vectors.a_associate_rq)
    with pytest.raises(ProtocolError):
        dicom.pdu_header(b"\x01\x00")


def test_rewrite_called_ae_keeps_length_and_everything_else():
    pdu = vectors.a_associate_rq
    rewritten = dicom.rewrite_called_ae(pdu, "PACS1")

    assert len(rewritten) == len(pdu)
    assert rewritten[10:26] == b"PACS1" + b" " * 11
    assert rewritten[:10] == pdu[:10] and rewritten[26:] == pdu[26:]
    reference = PynetdicomRQ()
    reference.decode(rewritten)
    assert reference.called_ae_title == "PACS1"
    assert dicom.parse_associate_rq(rewritten).calling_ae == "ECHOSCU"


def test_called_ae_is_restored_in_the_accept():
    ac = dicom.replace_called_ae(vectors.a_associate_ac, dicom.encode_ae("PACS1"))
    original = vectors.a_associate_rq[dicom.CALLED_AE]

    restored = dicom.replace_called_ae(ac, original)

    assert restored == vectors.a_associate_ac


def test_replace_refuses_other_pdus_and_bad_fields():
    with pytest.raises(ProtocolError):
        dicom.replace_called_ae(vectors.p_data_tf, b" " * 16)
    with pytest.raises(ValueError):
        dicom.replace_called_ae(vectors.a_associate_rq, b"SHORT")
    with pytest.raises(ValueError):
        dicom.encode_ae("A" * 17)


def test_ae_titles_are_stripped_of_spaces_and_nuls_and_made_printable():
    assert dicom.decode_ae(b"  CT1\x00\x00          ") == "CT1"
    assert dicom.decode_ae(b"CT\x01\xff" + b" " * 12) == "CT??"
    assert dicom.encode_ae(" MR1 ") == b"MR1" + b" " * 13


def test_reject_and_abort_bytes():
    assert dicom.associate_rj(2, 3, 1) == bytes.fromhex("03000000000400020301")
    assert dicom.associate_rj(*dicom.RJ_CALLED_AE_NOT_RECOGNISED) == vectors.a_associate_rj[:7] + b"\x01\x01\x07"
    assert dicom.a_abort() == bytes.fromhex("07000000000400000200")
    assert dicom.a_abort(0, 0) == vectors.a_abort
    assert dicom.a_abort(2, 4) == vectors.a_p_abort
    assert dicom.A_RELEASE_RQ_BYTES == vectors.a_release_rq
    rejection = dicom.parse_associate_rj(vectors.a_associate_rj)
    assert (rejection.result, rejection.source, rejection.reason) == (1, 1, 1)
    assert dicom.parse_abort(vectors.a_p_abort) == dicom.Abort(2, 4)


def test_rejections_are_described_for_operators():
    assert dicom.describe_rejection(1, 1, 7) == \
        "rejected (permanent, service-user, reason 7: called AE title not recognised)"
    assert dicom.describe_rejection(2, 3, 1) == \
        "rejected (transient, service-provider (presentation), reason 1: temporary congestion)"
    assert dicom.describe_rejection(9, 9, 9) == "rejected (result 9, source 9, reason 9)"
    assert dicom.Rejection(2, 3, 2).transient
    assert dicom.Abort(2, 1).describe() == "aborted (service-provider: unrecognised PDU)"


def test_parse_refuses_wrong_type_and_bad_lengths():
    with pytest.raises(ProtocolError):
        dicom.parse_associate_rq(vectors.a_associate_ac)
    pdu = bytearray(vectors.a_associate_rq)
    pdu[5] += 1  # the length field no longer matches
    with pytest.raises(ProtocolError):
        dicom.parse_associate_rq(bytes(pdu))
    with pytest.raises(ProtocolError):
        dicom.parse_associate_rq(vectors.a_associate_rq[:-3])
    with pytest.raises(ProtocolError):
        dicom.parse_associate_rj(vectors.a_abort)
    with pytest.raises(ProtocolError):
        dicom.parse_abort(vectors.a_associate_rj)


# --- incremental reading ---------------------------------------------------------------


def test_reader_assembles_a_pdu_fed_byte_by_byte_and_keeps_the_rest():
    reader = dicom.PduReader(65536, frozenset({dicom.A_ASSOCIATE_RQ}))
    stream = vectors.a_associate_rq + vectors.p_data_tf
    result = None
    for index in range(len(vectors.a_associate_rq)):
        assert result is None
        result = reader.feed(stream[index:index + 1])
    assert result == vectors.a_associate_rq
    reader = dicom.PduReader(65536, frozenset({dicom.A_ASSOCIATE_RQ}))
    assert reader.feed(stream) == vectors.a_associate_rq
    assert reader.rest == vectors.p_data_tf


def test_reader_refuses_an_oversized_pdu_from_its_header_alone():
    reader = dicom.PduReader(1000, frozenset({dicom.A_ASSOCIATE_RQ}))
    header = b"\x01\x00" + (5000).to_bytes(4, "big")
    with pytest.raises(dicom.PduTooLarge) as caught:
        reader.feed(header)
    assert caught.value.abort_reason == dicom.ABORT_NOT_SPECIFIED


def test_reader_refuses_unknown_and_unexpected_types_with_the_matching_abort_reason():
    expected = frozenset({dicom.A_ASSOCIATE_RQ})
    with pytest.raises(ProtocolError) as unknown:
        dicom.PduReader(1000, expected).feed(b"GET / HTTP/1.1\r\n")
    assert unknown.value.abort_reason == dicom.ABORT_UNRECOGNISED_PDU
    with pytest.raises(ProtocolError) as unexpected:
        dicom.PduReader(1000, expected).feed(vectors.p_data_tf)
    assert unexpected.value.abort_reason == dicom.ABORT_UNEXPECTED_PDU


def test_stream_follows_boundaries_in_any_chunking():
    stream_bytes = vectors.p_data_tf * 3 + vectors.a_release_rq + vectors.p_data_tf[:7]
    rng = random.Random(7)
    for _ in range(200):
        stream = dicom.PduStream()
        pos = 0
        while pos < len(stream_bytes):
            step = rng.randint(1, 40)
            stream.feed(stream_bytes[pos:pos + step])
            pos += step
        assert stream.pdus == 5
        assert stream.last_type == dicom.P_DATA_TF
        assert not stream.at_boundary
    stream = dicom.PduStream()
    stream.feed(vectors.p_data_tf + vectors.a_release_rp)
    assert stream.at_boundary and stream.last_type == dicom.A_RELEASE_RP


# --- fuzzing: damaged input raises ProtocolError and nothing else ----------------------


def mutations(seed: bytes, rng: random.Random, count: int):
    for _ in range(count):
        data = bytearray(seed)
        choice = rng.random()
        if choice < 0.3:
            data = data[:rng.randrange(len(data))]
        elif choice < 0.6:
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.8:
            # lengths are where parsers break: change one of the length bytes
            position = rng.choice([4, 5, 76, 77] + [i for i in range(74, len(data)) if data[i - 2:i] == b"\x00\x00"])
            if position < len(data):
                data[position] = rng.randrange(256)
        else:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        yield bytes(data)


@pytest.mark.parametrize("seed_name", ["a_associate_rq", "a_associate_rq_user_id_ext_neg", "large"])
def test_damaged_requests_raise_only_protocol_error(seed_name):
    seed = storescu_like_rq(8) if seed_name == "large" else getattr(vectors, seed_name)
    rng = random.Random(seed_name)
    for data in mutations(seed, rng, 3000):
        try:
            parsed = dicom.parse_associate_rq(data)
        except ProtocolError as exc:
            assert str(exc)  # a message for the log, never the bytes
            continue
        assert len(parsed.called_ae) <= 16 and parsed.called_ae.isprintable()


def test_damaged_streams_never_break_the_reader_or_the_stream_tracker():
    rng = random.Random(11)
    for data in mutations(vectors.a_associate_rq + vectors.p_data_tf, rng, 3000):
        reader = dicom.PduReader(4096, frozenset({dicom.A_ASSOCIATE_RQ}))
        try:
            pos = 0
            while pos < len(data):
                step = rng.randint(1, 64)
                if reader.feed(data[pos:pos + step]) is not None:
                    break
                pos += step
        except ProtocolError:
            pass
        stream = dicom.PduStream()
        stream.feed(data)
        assert stream.pdus >= 0


@pytest.mark.parametrize("field, valid", [
    (b"CT1".ljust(16), True),
    (b"  CT1".ljust(16), True),                  # leading and trailing spaces are padding
    (b"CT1".ljust(16, b"\x00"), True),            # NUL padding, read as decode_ae reads it
    (b"A-Z_./:@!#$%&*+=".ljust(16), True),
    (b" " * 16, True),                           # blank: the allow-list and routes decide
    (b"CT\x011".ljust(16), False),               # control characters
    (b"CT1\r\n".ljust(16), False),
    (b"C\tT1".ljust(16), False),
    (b"CT\x001".ljust(16), False),               # a NUL inside the title is no padding
    (b"CT\x7f".ljust(16), False),                # DEL
    (b"CT\\1".ljust(16), False),                 # backslash: the value separator
    (b"CT\xe91".ljust(16), False),               # outside the default repertoire
])
def test_ae_titles_are_valid_only_in_the_default_repertoire_without_backslash_or_controls(field, valid):
    assert dicom.ae_title_valid(field) is valid


def test_the_request_says_which_ae_title_is_invalid():
    pdu = bytearray(vectors.a_associate_rq)
    assert (dicom.parse_associate_rq(bytes(pdu)).calling_ae_valid,
            dicom.parse_associate_rq(bytes(pdu)).called_ae_valid) == (True, True)
    pdu[dicom.CALLING_AE] = b"CT\x1b[2J".ljust(16)
    parsed = dicom.parse_associate_rq(bytes(pdu))
    assert (parsed.calling_ae_valid, parsed.called_ae_valid) == (False, True)
    assert parsed.calling_ae == "CT?[2J"  # still safe to log
    pdu[dicom.CALLED_AE] = b"PACS\\2".ljust(16)
    assert dicom.parse_associate_rq(bytes(pdu)).called_ae_valid is False
