"""Source-IP persistence: a bounded table from client address to server name.

A modality or workstation keeps talking to the same archive node for `timeout` after
its last connection. The table holds at most `max_entries`; the least recently used
entry goes first, so a scan from many addresses cannot grow memory without bound.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

#: One entry as it travels to the pair's peer: (client key, server name, seconds left).
#: Seconds left rather than an instant, since the two nodes' clocks may differ.
Entry = tuple[bytes, str, float]


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

    def export(self, now: float) -> list[Entry]:
        """The live entries, least recently used first, each with the time it has left."""
        return [(key, server, expires - now) for key, (server, expires) in self._entries.items() if expires > now]

    def load(self, entries: list[Entry], now: float) -> int:
        """Take entries recorded elsewhere (the active node of the pair); how many.

        Time left is capped at this table's timeout; only the `max_entries` with the most
        time left are kept, the others dropped without counting as evictions."""
        live = sorted((left, key, server) for key, server, left in entries if left > 0)[-self.max_entries:]
        for left, key, server in live:
            self._entries[key] = (server, now + min(left, self.timeout))
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1
        return len(live)


#: Every table's entries: {service: [entry, ...]}.
Tables = dict[str, list[Entry]]


def to_wire(tables: Tables) -> dict[str, list[list[Any]]]:
    return {service: [[key.hex(), server, round(left, 3)] for key, server, left in entries]
            for service, entries in tables.items()}


def from_wire(body: Any) -> Tables:
    """The tables a peer sent; ValueError naming the first thing that is not an entry."""
    if not isinstance(body, dict):
        raise ValueError("the entries must be an object by service")
    tables: Tables = {}
    for service, rows in body.items():
        if not isinstance(rows, list):
            raise ValueError(f"the entries of {service} are not a list")
        entries: list[Entry] = []
        for index, row in enumerate(rows):
            try:
                key_hex, server, left = row
                entry = (bytes.fromhex(key_hex), server, float(left))
            except (TypeError, ValueError):
                raise ValueError(f"entry {index} of {service} is not [key, server, seconds left]") from None
            if not isinstance(server, str) or isinstance(left, bool) or not math.isfinite(entry[2]):
                raise ValueError(f"entry {index} of {service} is not [key, server, seconds left]")
            entries.append(entry)
        tables[str(service)] = entries
    return tables


def export_tables(services: Mapping[str, Any], now: float) -> Tables:
    """Every source-IP service's live entries (`services`: a runtime's, by name)."""
    return {name: service.sticky.export(now) for name, service in services.items() if service.sticky is not None}


def load_tables(services: Mapping[str, Any], tables: Tables, now: float) -> int:
    """Load each service's entries into its table; how many were taken. Entries for a
    service without source-IP persistence here, or for a server it does not have, are
    dropped: this node's config decides where its clients may go."""
    taken = 0
    for name, entries in tables.items():
        service = services.get(name)
        if service is None or service.sticky is None:
            continue
        known = {server.name for server in service.servers()}
        taken += service.sticky.load([entry for entry in entries if entry[1] in known], now)
    return taken


def merge(parts: list[Tables]) -> Tables:
    """Several workers' tables as one: for a key in more than one, the one with the most time left."""
    merged: dict[str, dict[bytes, Entry]] = {}
    for tables in parts:
        for service, entries in tables.items():
            found = merged.setdefault(service, {})
            for entry in entries:
                if entry[0] not in found or entry[2] > found[entry[0]][2]:
                    found[entry[0]] = entry
    return {service: list(found.values()) for service, found in merged.items()}
