"""Reading what the kernel counts: conntrack's summary line and the netlink dump of a
medlb table's named counters (messages as the kernel sends them, built by hand)."""

from __future__ import annotations

import struct

import pytest

from medlb.kernel import netlink, system


@pytest.mark.parametrize("stderr, count", [
    ("conntrack v1.4.7 (conntrack-tools): 12 flow entries have been shown.\n", 12),
    ("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n", 3),
    ("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been shown.\n", 0),
    ("", 0),
])
def test_conntrack_summary_lines_give_the_count(stderr, count):
    assert system._flow_count(stderr) == count


def _attribute(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def _counter(name: str, packets: int, octets: int) -> bytes:
    """An NFT_MSG_NEWOBJ answer as the kernel writes it (nf_tables_fill_obj_info)."""
    data = _attribute(1, struct.pack(">Q", octets)) + _attribute(2, struct.pack(">Q", packets))
    body = (struct.pack("=BBH", 5, 0, 0) + _attribute(1, b"medlb_dr\0") + _attribute(2, name.encode() + b"\0")
            + _attribute(3, struct.pack(">I", 1)) + _attribute(4 | 0x8000, data) + _attribute(5, struct.pack(">I", 1)))
    return _message((10 << 8) | 18, body)


def test_a_netlink_dump_of_counters_reads_names_packets_and_bytes():
    answer = _counter("traffic_pacs/rs1", 12, 3456) + _counter("new_pacs/rs1", 5_000_000_000, 0)
    assert netlink.parse(answer) == ({"traffic_pacs/rs1": (12, 3456), "new_pacs/rs1": (5_000_000_000, 0)}, False)
    assert netlink.parse(_message(3, struct.pack("=i", 0))) == ({}, True)  # NLMSG_DONE


def test_a_netlink_error_answer_raises_with_its_errno():
    with pytest.raises(OSError) as raised:
        netlink.parse(_message(2, struct.pack("=i", -1) + b"\0" * 16))  # NLMSG_ERROR, EPERM
    assert raised.value.errno == 1


def test_the_dump_request_names_the_table_and_the_counter_type():
    sent = netlink.request("netdev", "medlb_dr")
    length, kind, flags = struct.unpack_from("=IHH", sent)
    assert (length, kind, flags) == (len(sent), (10 << 8) | 19, 0x301)  # GETOBJ, REQUEST | DUMP
    assert sent[16] == 5 and b"medlb_dr\0" in sent and struct.pack(">I", 1) in sent
