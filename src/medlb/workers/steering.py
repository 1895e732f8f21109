"""Keep every connection of one client address on one worker.

By default the kernel spreads the connections of an SO_REUSEPORT group over its sockets
by a hash of the four-tuple, so one client's connections land on every worker. That is
what load spreading wants, but source-IP persistence keeps its table in each worker:
a client must reach the same worker every time to find its entry. A classic BPF program
on the group picks the socket from the client's address instead: worker = address mod N.
"""

from __future__ import annotations

import ctypes
import socket

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
_SKF_NET_OFF = -0x100000
_LD_W_ABS = 0x20   # BPF_LD | BPF_W | BPF_ABS
_ALU_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K
_RET_A = 0x16      # BPF_RET | BPF_A


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


def steer_by_source(sock: socket.socket, workers: int) -> None:
    """Attach the program to the group `sock` listens in; raises OSError if the kernel refuses.

    The last 32 bits of the source address are used: the whole IPv4 address, or the
    interface identifier's low half for IPv6.
    """
    offset = 12 if sock.family == socket.AF_INET else 20
    code = [(_LD_W_ABS, (_SKF_NET_OFF + offset) & 0xFFFFFFFF), (_ALU_MOD_K, workers), (_RET_A, 0)]
    filters = (_Filter * len(code))(*[_Filter(op, 0, 0, k) for op, k in code])
    program = _Program(len(code), filters)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, ctypes.string_at(ctypes.addressof(program), ctypes.sizeof(program)))

