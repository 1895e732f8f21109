"""What this node hears of its peer holding itself active, for the split-brain watch.

keepalived says which role this node has, never what it heard from the peer.
- Adverts: only the active node advertises, so an advert from the peer means the
  peer holds itself active. A raw IPv4 socket for protocol 112 gets a copy of every
  VRRP packet the kernel delivers to this host (keepalived's own socket gets its
  copy as well; nothing is taken from it), after the firewall's input hook: what a
  firewall drops, neither keepalived nor this sees.
- ARP: a node that becomes active sends gratuitous ARPs for the VIPs, and answers
  ARP requests for them while it holds them. A packet socket on the interface sees
  ARP for a VIP from another MAC than this node's; while a split brain is open this
  node asks (`probe`) who has each VIP, and the peer answers until it yields. When
  VRRP is lost but the link is not (a firewall, filtered multicast: the usual split
  brain), this is how the node that keeps the VIPs learns when the episode began
  and ended.
Both need CAP_NET_RAW, which keepalived needs anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable, Sequence

from medlb import logs

log = logs.get_logger("medlb.ha")

VRRP_PROTOCOL = 112
#: VRRPv3 advertisement: version 3, type 1, in the first byte.
ADVERT_V3 = 0x31

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6

#: Called with the priority of each advert from the peer for our VRID.
AdvertListener = Callable[[int], None]
#: Called for each ARP packet for a VIP from another MAC than this node's.
ClaimListener = Callable[[], None]


def parse(packet: bytes, peer: ipaddress.IPv4Address, vrid: int) -> int | None:
    """The priority of a VRRPv3 advert from `peer` for `vrid` in one IPv4 packet, else None."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header = (packet[0] & 0x0F) * 4
    vrrp = packet[header:header + 8]
    if len(vrrp) < 8 or ipaddress.IPv4Address(packet[12:16]) != peer or vrrp[0] != ADVERT_V3 or vrrp[1] != vrid:
        return None
    return vrrp[2]


class _RawWatch:
    """A raw socket on the pair's interface, read on the event loop while started."""

    #: The event logged when the socket cannot be opened, and what that costs.
    failed_event = ""
    failed_effect = ""

    def __init__(self, interface: str):
        self.interface = interface
        self._socket: socket.socket | None = None

    def _open(self) -> socket.socket:
        raise NotImplementedError

    def _packet(self, packet: bytes) -> None:
        raise NotImplementedError

    def start(self) -> bool:
        """False, logged, when the socket cannot be opened."""
        try:
            sock = self._open()
            sock.setblocking(False)
        except OSError as exc:
            log.error(self.failed_event, interface=self.interface, error=exc.strerror or str(exc),
                      effect=self.failed_effect)
            return False
        self._socket = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
        return True

    def _read(self) -> None:
        assert self._socket is not None
        for _ in range(64):  # a burst, then back to the loop
            try:
                packet = self._socket.recv(2048)
            except OSError:  # nothing more to read now (BlockingIOError), or the socket failed
                return
            self._packet(packet)

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None


class AdvertWatch(_RawWatch):
    """Reads the peer's adverts on the pair's interface while started."""

    failed_event = "ha_advert_watch_failed"
    failed_effect = "split brain is not detected on this node"

    def __init__(self, interface: str, peer: ipaddress.IPv4Address, vrid: int, on_advert: AdvertListener):
        super().__init__(interface)
        self.peer, self.vrid, self.on_advert = peer, vrid, on_advert

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTOCOL)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
        return sock

    def _packet(self, packet: bytes) -> None:
        priority = parse(packet, self.peer, self.vrid)
        if priority is not None:
            self.on_advert(priority)


def claims_vip(frame: bytes, vips: set[bytes], own_mac: bytes) -> bool:
    """An Ethernet ARP frame (request or reply) whose sender is a VIP at another MAC."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return False
    sender_mac, sender_ip = frame[22:28], frame[28:32]
    return sender_ip in vips and sender_mac != own_mac


def arp_request(own_mac: bytes, own_ip: bytes, target_ip: bytes) -> bytes:
    """Who has `target_ip`? tell `own_ip` (broadcast)."""
    return (BROADCAST + own_mac + b"\x08\x06"
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + own_mac + own_ip + b"\x00" * 6 + target_ip)


class ClaimWatch(_RawWatch):
    """ARP for the VIPs from another MAC on the pair's interface, and probes for them."""

    failed_event = "ha_arp_watch_failed"
    failed_effect = "this node learns of a split brain it wins only from the peer's adverts"

    def __init__(self, interface: str, own: ipaddress.IPv4Address, vips: Sequence[ipaddress.IPv4Address],
                 on_claim: ClaimListener):
        super().__init__(interface)
        self.own, self.on_claim = own, on_claim
        self.vips = {vip.packed for vip in vips}
        self._mac = b""

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        sock.bind((self.interface, ETH_P_ARP))
        self._mac = sock.getsockname()[4]
        return sock

    def _packet(self, packet: bytes) -> None:
        if claims_vip(packet, self.vips, self._mac):
            self.on_claim()

    def probe(self) -> None:
        """Ask who has each VIP; the peer answers while it holds them."""
        if self._socket is None:
            return
        for vip in self.vips:
            with contextlib.suppress(OSError):
                self._socket.send(arp_request(self._mac, self.own.packed, vip))
