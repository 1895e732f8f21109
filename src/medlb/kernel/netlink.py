"""Reading a medlb table's named counters straight from the kernel over netlink.

`nft list counters table ...` fills nft's whole cache first, every element of every
map included: with one DR and one NAT service (two 65,537-slot Maglev maps) that is
1.5 s of CPU per read with nft 1.0.6, and the API, the page, the charts' sampler and
/metrics read the counters every few seconds. One netlink dump of a table's counter
objects (NFT_MSG_GETOBJ, filtered by table and type in the kernel) returns the same
numbers in about a millisecond.

Read only: the one request sent is a GET dump, which cannot change any table. Like
nft, it sees the network namespace this process runs in.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
_NFNL_SUBSYS_NFTABLES = 10
_NFT_MSG_NEWOBJ = 18
_NFT_MSG_GETOBJ = 19
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NFTA_OBJ_TABLE = 1
_NFTA_OBJ_NAME = 2
_NFTA_OBJ_TYPE = 3
_NFTA_OBJ_DATA = 4
_NFT_OBJECT_COUNTER = 1
_NFTA_COUNTER_BYTES = 1
_NFTA_COUNTER_PACKETS = 2
_NLA_TYPE_MASK = 0x3FFF
#: nft's family names -> NFPROTO_* numbers.
FAMILIES = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}


def _attribute(kind: int, payload: bytes) -> bytes:
    header = struct.pack("=HH", 4 + len(payload), kind)
    return header + payload + b"\0" * (-len(payload) % 4)


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        yield kind & _NLA_TYPE_MASK, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def request(family: str, table: str, sequence: int = 1) -> bytes:
    """The dump request for every counter object of one table."""
    body = struct.pack("=BBH", FAMILIES[family], 0, 0)
    body += _attribute(_NFTA_OBJ_TABLE, table.encode() + b"\0")
    body += _attribute(_NFTA_OBJ_TYPE, struct.pack(">I", _NFT_OBJECT_COUNTER))
    kind = (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_GETOBJ
    return struct.pack("=IHHII", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_DUMP, sequence, 0) + body


def parse(messages: bytes) -> tuple[dict[str, tuple[int, int]], bool]:
    """The counters in a run of answer messages, name -> (packets, bytes), and whether
    the dump ended. An error answer raises OSError with its errno."""
    found: dict[str, tuple[int, int]] = {}
    offset = 0
    while offset + 16 <= len(messages):
        length, kind, _, _, _ = struct.unpack_from("=IHHII", messages, offset)
        if length < 16:
            break
        payload = messages[offset + 16:offset + length]
        offset += (length + 3) & ~3
        if kind == _NLMSG_DONE:
            return found, True
        if kind == _NLMSG_ERROR:
            error = -struct.unpack_from("=i", payload)[0]
            if error:
                raise OSError(error, f"netlink dump of counters: {os.strerror(error)}")
            continue
        if kind != (_NFNL_SUBSYS_NFTABLES << 8) | _NFT_MSG_NEWOBJ:
            continue
        name, numbers = "", (0, 0)
        for attribute, value in _attributes(payload[4:]):  # after the nfgenmsg header
            if attribute == _NFTA_OBJ_NAME:
                name = value.rstrip(b"\0").decode()
            elif attribute == _NFTA_OBJ_DATA:
                counted = {inner: struct.unpack(">Q", data[:8])[0] for inner, data in _attributes(value)}
                numbers = (counted.get(_NFTA_COUNTER_PACKETS, 0), counted.get(_NFTA_COUNTER_BYTES, 0))
        if name:
            found[name] = numbers
    return found, False


def counters(family: str, table: str, timeout: float = 5.0) -> dict[str, tuple[int, int]]:
    """Named counter -> (packets, bytes) of one table; empty when the table is absent."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout)
        sock.bind((0, 0))
        sock.send(request(family, table))
        found: dict[str, tuple[int, int]] = {}
        while True:
            part, done = parse(sock.recv(1 << 16))
            found.update(part)
            if done:
                return found
