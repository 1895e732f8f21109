"""Properties of the HL7 field reader (protocols/hl7.py), on any bytes.

Its contract: a message medlb cannot read raises `HL7Error` and nothing else; a field
path the configuration accepts reads the value HL7 numbering names (MSH-n counts the
field separator as MSH-1; a component path reads the first repetition), whatever the
separators; the ACK medlb writes reads back with the code and the control ID it
answers, and no text can add a segment to it. Messages are also built from random
values and separators, so that every path of the reader is reached. `make fuzz` runs
these for longer.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_strategies import tokens
from medlb.config.models import MllpConfig
from medlb.protocols.hl7 import HL7Error, build_ack, field_value, parse_ack, parse_header

#: The paths `mllp.ordering_key` accepts (its validator is the contract).
paths = st.from_regex(r"[A-Z][A-Z0-9]{2}-[1-9][0-9]?(\.[1-9][0-9]?){0,2}", fullmatch=True)
segment_names = st.from_regex(r"[A-Z][A-Z0-9]{2}", fullmatch=True).filter(lambda name: name != "MSH")
#: Five distinct delimiter bytes: field, component, repetition, escape, subcomponent.
delimiters = st.lists(st.sampled_from(b"|^~\\&#*!$%@+/:;=?_`{}"), min_size=5, max_size=5, unique=True).map(bytes)
any_message = st.one_of(st.binary(max_size=200), tokens(b"MSH", b"MSH|^~\\&|", b"|", b"^", b"~", b"&", b"\r",
                                                         b"\n", b"\rPID|", b"\rMSA|AA|", b"PID", b"MSA"))


#: Field values as HL7 nests them: repetitions of components of subcomponents of text.
#: The text is random bytes; those that are delimiters of the message are removed later.
raw_fields = st.lists(st.lists(st.lists(st.lists(st.binary(max_size=6), min_size=1, max_size=3), min_size=1,
                                        max_size=3), min_size=1, max_size=2), max_size=12)


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, bytes, list[str], list]:
    """(message, delimiters, segment names, segments): segments[s][f][r][c][sub] holds
    the text of field f+1 (MSH: f+3) of segment s, as HL7 numbers them."""
    delims = draw(delimiters)
    field_sep, comp, rep, _, sub = (delims[i:i + 1] for i in range(5))
    forbidden = set(delims + b"\r\n")

    def clean(fields: list) -> list:
        return [[[[bytes(b for b in text if b not in forbidden) for text in subs] for subs in components]
                 for components in field] for field in fields]

    def join(field: list) -> bytes:
        return rep.join(comp.join(sub.join(subs) for subs in components) for components in field)

    msh = clean(draw(raw_fields))
    msh += [[[[b""]]]] * (8 - len(msh))
    msh[7] = [[[draw(st.sampled_from([b"C1", b"MSG00001", b"\x00", b"20260101120000.0001"]))]]]  # MSH-10: required
    names = draw(st.lists(segment_names, max_size=4))
    segments = [msh] + [clean(draw(raw_fields.filter(bool))) for _ in names]
    end = draw(st.sampled_from([b"\r", b"\n", b"\r\n"]))
    lines = [b"MSH" + field_sep + delims[1:] + b"".join(field_sep + join(field) for field in msh)]
    lines += [name.encode() + b"".join(field_sep + join(field) for field in segment)
              for name, segment in zip(names, segments[1:])]
    return end.join(lines) + draw(st.sampled_from([b"", end])), delims, ["MSH"] + names, segments


def expected_value(delims: bytes, names: list[str], segments: list, path: str) -> bytes | None:
    """What `path` names in the message built from these values, by HL7 numbering."""
    name, field_no, component, subcomponent = re.fullmatch(r"(...)-(\d+)(?:\.(\d+))?(?:\.(\d+))?", path).groups()
    if name not in names:
        return None
    segment = segments[names.index(name)]
    if name == "MSH" and int(field_no) <= 2:
        whole = {1: delims[:1], 2: delims[1:]}.get(int(field_no))
        field = [[[whole]]] if whole is not None else []
    else:
        index = int(field_no) - (3 if name == "MSH" else 1)
        field = segment[index] if 0 <= index < len(segment) else []
    if component is None:
        comp, rep, sub = delims[1:2], delims[2:3], delims[4:5]
        return rep.join(comp.join(sub.join(subs) for subs in components) for components in field)
    components = field[0] if field else []
    index = int(component) - 1
    subs = components[index] if 0 <= index < len(components) else []
    if subcomponent is None:
        return delims[4:5].join(subs)
    index = int(subcomponent) - 1
    return subs[index] if 0 <= index < len(subs) else b""


numbers = st.integers(1, 14).map(str)


@st.composite
def field_paths_of(draw: st.DrawFn, names: list[str]) -> str:
    """A path into one of the segments present (or, at times, into an absent one)."""
    name = draw(st.sampled_from(names) | segment_names)
    parts = [draw(numbers)] + [part for part in (draw(st.none() | numbers), draw(st.none() | numbers)) if part]
    if name == "MSH" and parts[0] in ("1", "2"):
        parts = parts[:1]  # MSH-1 and MSH-2 are the delimiters themselves: they have no components
    return f"{name}-{'.'.join(parts)}"


@given(st.one_of(any_message, any_message.map(lambda m: b"MSH" + m)), paths)
def test_any_bytes_raise_only_hl7_error(message, path):
    try:
        header = parse_header(message)
        field_value(message, path, header)
        parse_ack(message)
    except HL7Error as error:
        assert str(error)


@given(paths)
def test_every_path_the_configuration_accepts_is_a_path_the_reader_reads(path):
    MllpConfig(ordering_key=path)
    field_value(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5.1\rPID|1||X\r", path)


@pytest.mark.parametrize("path", ["PID-0", "PID-3.0", "PID-3.1.0", "PID-03"])
def test_an_index_0_is_refused_by_the_config_and_the_reader(path):
    """PID-0 read the segment's name and PID-3.0 the last component: a feed keyed on
    them would order every patient as one, or by the wrong identifier."""
    with pytest.raises(ValueError, match="counts fields, components and subcomponents from 1"):
        MllpConfig(ordering_key=path)
    with pytest.raises(ValueError, match="not a field path"):
        field_value(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|C1|P|2.5.1\rPID|1||X^Y\r", path)


@given(messages(), st.data())
def test_a_field_reads_as_the_value_the_message_was_built_with(built, data):
    message, delims, names, segments = built
    path = data.draw(field_paths_of(names))

    assert field_value(message, path) == expected_value(delims, names, segments, path)


@given(messages())
def test_the_header_reads_as_the_message_was_built(built):
    message, delims, _, segments = built
    msh = [expected_value(delims, ["MSH"], segments[:1], f"MSH-{n}") for n in range(1, 13)]

    header = parse_header(message)

    assert (header.field_sep, header.encoding) == (delims[:1], delims[1:])
    assert (header.sending_app, header.sending_facility, header.receiving_app, header.receiving_facility) == \
        tuple(msh[2:6])
    assert (header.message_type, header.control_id, header.processing_id, header.version) == tuple(msh[8:12])


@given(messages(), st.sampled_from(["AA", "AE", "AR", "CA", "CE", "CR"]), st.text(max_size=40))
def test_an_ack_medlb_writes_reads_back_with_its_code_and_the_control_id_it_answers(built, code, text):
    header = parse_header(built[0])

    ack = build_ack(header, code, text)

    read = parse_ack(ack)
    assert (read.code, read.acked_control_id) == (code.encode(), header.control_id)
    assert (parse_header(ack).field_sep, parse_header(ack).encoding) == (header.field_sep, header.encoding)
    # MSH, MSA, and ERR for a negative ACK only: the text adds no segment.
    assert ack.count(b"\r") == (2 if code in ("AA", "CA") else 3) and b"\n" not in ack
