"""What the split-brain watch reads off the wire (medlb.ha.adverts): VRRPv3 adverts
from the peer, and ARP for a VIP from another MAC, on packets built byte by byte."""

from __future__ import annotations

import ipaddress
import struct

from medlb.ha.adverts import arp_request, claims_vip, parse

PEER = ipaddress.IPv4Address("198.18.0.20")
VIP = ipaddress.IPv4Address("198.18.0.100").packed
OWN_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")


def vrrp_packet(source: str, vrid: int = 51, priority: int = 100, version_type: int = 0x31) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, 32, 0, 0, 255, 112, 0,
                     ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address("198.18.0.10").packed)
    return ip + bytes([version_type, vrid, priority, 1, 0, 20, 0, 0]) + VIP


def test_an_advert_from_the_peer_for_our_router_gives_its_priority():
    assert parse(vrrp_packet("198.18.0.20", priority=100), PEER, 51) == 100
    assert parse(vrrp_packet("198.18.0.20", priority=0), PEER, 51) == 0


def test_adverts_from_elsewhere_for_another_router_of_v2_or_cut_short_are_not_the_peers():
    assert parse(vrrp_packet("198.18.0.30"), PEER, 51) is None
    assert parse(vrrp_packet("198.18.0.20", vrid=52), PEER, 51) is None
    assert parse(vrrp_packet("198.18.0.20", version_type=0x21), PEER, 51) is None
    assert parse(vrrp_packet("198.18.0.20")[:24], PEER, 51) is None
    assert parse(b"", PEER, 51) is None


def arp_frame(sender_mac: bytes, sender_ip: bytes, operation: int = 2) -> bytes:
    return (b"\xff" * 6 + sender_mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, operation)
            + sender_mac + sender_ip + OWN_MAC + ipaddress.IPv4Address("198.18.0.10").packed)


def test_arp_for_a_vip_from_another_mac_is_a_claim_and_from_this_node_or_for_another_address_is_not():
    vips = {VIP}
    assert claims_vip(arp_frame(PEER_MAC, VIP), vips, OWN_MAC)
    assert claims_vip(arp_frame(PEER_MAC, VIP, operation=1), vips, OWN_MAC)  # a gratuitous ARP
    assert not claims_vip(arp_frame(OWN_MAC, VIP), vips, OWN_MAC)  # this node's own
    assert not claims_vip(arp_frame(PEER_MAC, ipaddress.IPv4Address("198.18.0.20").packed), vips, OWN_MAC)
    assert not claims_vip(arp_frame(PEER_MAC, VIP)[:30], vips, OWN_MAC)


def test_the_probe_asks_who_has_the_vip_from_this_nodes_address():
    own_ip = ipaddress.IPv4Address("198.18.0.10").packed
    frame = arp_request(OWN_MAC, own_ip, VIP)
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert struct.unpack("!H", frame[20:22]) == (1,)  # a request
    assert frame[22:28] == OWN_MAC and frame[28:32] == own_ip and frame[38:42] == VIP
    assert not claims_vip(frame, {VIP}, OWN_MAC)  # this node's own probe is no claim
