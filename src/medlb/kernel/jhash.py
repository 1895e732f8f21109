"""The kernel's flow hash, computed in Python: which Maglev bucket a flow lands in.

The ruleset lets nftables hash each flow (`jhash ip saddr . tcp sport mod SIZE seed S`,
nft_hash.c: `reciprocal_scale(jhash(regs, len, seed), SIZE)`); this module computes the
same number, so medlb can tell an engineer which server a client's flow goes to and the
tests can predict the kernel's choices. nft hands jhash the registers: every field of a
concatenation is padded to 4 bytes (the port `0x1f90` is the bytes `1f 90 00 00`), and
jhash reads them as little-endian words (`__get_unaligned_cpu32` on x86 and arm64).
Checked against the kernel (6.18, nft 1.0.6) in a network namespace: tests/netns.
"""

from __future__ import annotations

import ipaddress
import struct

_MASK = 0xFFFFFFFF
_JHASH_INITVAL = 0xDEADBEEF


def _rol(word: int, count: int) -> int:
    return ((word << count) | (word >> (32 - count))) & _MASK


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_mix: one round over a full 12-byte block, step for step."""
    a = ((a - c) & _MASK) ^ _rol(c, 4)
    c = (c + b) & _MASK
    b = ((b - a) & _MASK) ^ _rol(a, 6)
    a = (a + c) & _MASK
    c = ((c - b) & _MASK) ^ _rol(b, 8)
    b = (b + a) & _MASK
    a = ((a - c) & _MASK) ^ _rol(c, 16)
    c = (c + b) & _MASK
    b = ((b - a) & _MASK) ^ _rol(a, 19)
    a = (a + c) & _MASK
    c = ((c - b) & _MASK) ^ _rol(b, 4)
    b = (b + a) & _MASK
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_final: the last block's avalanche."""
    c = ((c ^ b) - _rol(b, 14)) & _MASK
    a = ((a ^ c) - _rol(c, 11)) & _MASK
    b = ((b ^ a) - _rol(a, 25)) & _MASK
    c = ((c ^ b) - _rol(b, 16)) & _MASK
    a = ((a ^ c) - _rol(c, 4)) & _MASK
    b = ((b ^ a) - _rol(a, 14)) & _MASK
    c = ((c ^ b) - _rol(b, 24)) & _MASK
    return a, b, c


def jhash(key: bytes, initval: int) -> int:
    """Bob Jenkins' lookup3 hash as include/linux/jhash.h has it (`jhash()`)."""
    length = len(key)
    a = b = c = (_JHASH_INITVAL + length + initval) & _MASK
    position = 0
    while length > 12:
        x, y, z = struct.unpack_from("<III", key, position)
        a, b, c = _mix((a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK)
        length -= 12
        position += 12
    if length == 0:
        return c
    x, y, z = struct.unpack("<III", key[position:] + bytes(12 - length))
    return _final((a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK)[2]


def flow_key(client: str, client_port: int | None) -> bytes:
    """The registers nft hashes: `ip saddr . tcp sport`, or `ip saddr` alone (port None)."""
    key = ipaddress.IPv4Address(client).packed
    if client_port is not None:
        key += struct.pack("!H", client_port) + b"\0\0"
    return key


def bucket(client: str, client_port: int | None, *, seed: int, size: int) -> int:
    """The bucket `jhash <key> mod size seed seed` gives this flow in the kernel."""
    return (jhash(flow_key(client, client_port), seed) * size) >> 32
