"""Source-IP persistence: a bounded table from client address to server name.

A modality or workstation keeps talking to the same archive node for `timeout` after
its last connection. The table holds at most `max_entries`; the least recently used
entry goes first, so a scan from many addresses cannot grow memory without bound.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict


def client_key(address: str, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> bytes:
    """The persistence key of a client address, grouped by prefix length."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address.encode()
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if prefix >= ip.max_prefixlen:
        return ip.packed
    network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    return network.network_address.packed + bytes([prefix])


class StickTable:
    def __init__(self, timeout: float, max_entries: int):
        self.timeout = timeout
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        server, expires = entry
        if expires <= now:
            del self._entries[key]
            return None
        return server

    def put(self, key: bytes, server: str, now: float) -> None:
        """Record or refresh an entry; called when a connection starts and ends."""
        entries = self._entries
        entries[key] = (server, now + self.timeout)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    def forget_server(self, server: str) -> None:
        for key in [key for key, (name, _) in self._entries.items() if name == server]:
            del self._entries[key]

    def expire(self, now: float) -> None:
        """Drop expired entries (entries are refreshed out of order, so scan them all)."""
        for key in [key for key, (_, expires) in self._entries.items() if expires <= now]:
            del self._entries[key]
