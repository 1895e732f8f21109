"""The peer's VRRP adverts, as this node receives them, for the split-brain watch.

keepalived says which role this node has, never what it heard from the peer; and
only the active node advertises, so an advert from the peer means the peer holds
itself active. A raw IPv4 socket for protocol 112 gets a copy of every VRRP packet
the kernel delivers to this host (keepalived's own socket gets its copy as well;
nothing is taken from it), after the firewall's input hook: what a firewall drops,
neither keepalived nor this sees. Needs CAP_NET_RAW, which keepalived needs anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable

from medlb import logs

log = logs.get_logger("medlb.ha")

VRRP_PROTOCOL = 112
#: VRRPv3 advertisement: version 3, type 1, in the first byte.
ADVERT_V3 = 0x31

#: Called with the priority of each advert from the peer for our VRID.
AdvertListener = Callable[[int], None]


def parse(packet: bytes, peer: ipaddress.IPv4Address, vrid: int) -> int | None:
    """The priority of a VRRPv3 advert from `peer` for `vrid` in one IPv4 packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header = (packet[0] & 0x0F) * 4
    vrrp = packet[header:header + 8]
    if len(vrrp) < 8 or ipaddress.IPv4Address(packet[12:16]) != peer or vrrp[0] != ADVERT_V3 or vrrp[1] != vrid:
        return None
    return vrrp[2]


class AdvertWatch:
    """Reads the peer's adverts on the pair's interface while started."""

    def __init__(self, interface: str, peer: ipaddress.IPv4Address, vrid: int, on_advert: AdvertListener):
        self.interface, self.peer, self.vrid, self.on_advert = interface, peer, vrid, on_advert
        self._socket: socket.socket | None = None

    def start(self) -> bool:
        """False, logged, when the socket cannot be opened: split brain then goes
        unnoticed on this node (the peer may still see it)."""
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTOCOL)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.setblocking(False)
        except OSError as exc:
            log.error("ha_advert_watch_failed", interface=self.interface, error=exc.strerror or str(exc),
                      effect="split brain is not detected on this node")
            return False
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
        return True

    def _read(self) -> None:
        assert self._socket is not None
        for _ in range(64):  # a burst, then back to the loop
            try:
                packet = self._socket.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            priority = parse(packet, self.peer, self.vrid)
            if priority is not None:
                self.on_advert(priority)

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
