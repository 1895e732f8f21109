"""Building layer 4 descriptions for the renderer's unit tests and the netns tests."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace

from medlb.kernel.description import (
    L4Listen,
    L4Ruleset,
    L4Server,
    L4Service,
    server_mark,
)
from medlb.kernel.maglev import build_table, service_seed

#: The example of issue 13's "Done when", as written there.
ISSUE_EXAMPLE = """\
services:
  - name: pacs-retrieve
    mode: l4-dr
    listen: ["198.18.0.100:104", "198.18.0.100:11112"]
    l4: {interface: lb0}
    health: {type: dicom-echo, interval: 1s, timeout: 1s, fall: 2, rise: 2}
    on_halt: close
    servers:
      - {name: pacs1, address: "198.18.0.11"}
      - {name: pacs2, address: "198.18.0.12"}
    backup:
      - {name: dr1, address: "198.18.0.21"}
    failback: manual
  - name: vna-nat
    mode: l4-nat
    listen: ["198.18.0.101:12000-12001"]
    l4: {interface: lb0, source_nat: true}
    health: {type: tcp, interval: 500ms, timeout: 500ms, fall: 2, rise: 2}
    servers:
      - {name: vna1, address: "198.18.0.11"}
      - {name: vna2, address: "198.18.0.12"}
"""


def listen(address: str, *ports: int | tuple[int, int]) -> L4Listen:
    return L4Listen(ipaddress.IPv4Address(address),
                    tuple(port if isinstance(port, tuple) else (port, port) for port in ports))


def server(service: str, name: str, address: str, *, mac: str | None = None, port: int | None = None,
           forwarding: bool = True) -> L4Server:
    return L4Server(name, server_mark(service, name), ipaddress.IPv4Address(address), port, mac, forwarding)


def service(name: str, mode: str, listens: Sequence[L4Listen], servers: Sequence[L4Server], *,
            taking: Sequence[str] | None = None, size: int = 13, interface: str = "lb0", **options) -> L4Service:
    """A service whose Maglev table holds `taking` (default: every server) of `servers`."""
    seed = service_seed(name, str(listens[0].address))
    table = build_table({s.name: 1 for s in servers}, seed=seed, size=size,
                        available=[s.name for s in servers] if taking is None else taking)
    return L4Service(name, mode, tuple(listens), interface, tuple(servers), table, **options)  # type: ignore[arg-type]


def with_taking(old: L4Service, taking: Sequence[str], **server_changes: dict) -> L4Service:
    """The same service after a state or health change: `taking` take new flows, and
    `server_changes[name]` replaces fields of that server (e.g. forwarding=False)."""
    servers = tuple(replace(s, **server_changes.get(s.name, {})) for s in old.servers)
    table = build_table({s.name: 1 for s in servers}, seed=old.table.seed, size=old.table.size, available=taking)
    return replace(old, servers=servers, table=table)


def ruleset(*services: L4Service, macs: dict[str, str] | None = None) -> L4Ruleset:
    return L4Ruleset(tuple(services), tuple((macs or {}).items()))
