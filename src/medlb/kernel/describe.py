"""From the runtime model to what the kernel must do: pure, no I/O.

A layer 4 service's servers take new flows by the same rule as a layer 7 service's
(`Service.pick`): the active tier of its pool (primary, or the backup cluster after a
failover), online and up, weight above 0. What a layer 7 relay decides per connection
the kernel decides per flow from the Maglev table built here, and the states that
keep established flows going (drain, `on_halt: keep`) become `forwarding`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from medlb.config.models import L4_MODES, ServiceConfig, SourceIpPersistence
from medlb.kernel.description import HashKey, L4Listen, L4Server, L4Service, server_mark
from medlb.kernel.maglev import DEFAULT_TABLE_SIZE, build_table, service_seed

if TYPE_CHECKING:
    from medlb.runtime import Server, Service

def is_kernel(config: ServiceConfig) -> bool:
    """Forwarded by the kernel: medlb binds none of its addresses."""
    return config.mode in L4_MODES


def listens(config: ServiceConfig) -> tuple[L4Listen, ...]:
    """The VIPs in the order written, each with its ports folded into ranges."""
    ports: dict[str, list[int]] = {}
    for address in config.addresses:
        assert address.port is not None
        ports.setdefault(address.host, []).append(address.port)
    result = []
    for host, numbers in ports.items():
        ranges: list[tuple[int, int]] = []
        for port in sorted(set(numbers)):
            if ranges and ranges[-1][1] == port - 1:
                ranges[-1] = (ranges[-1][0], port)
            else:
                ranges.append((port, port))
        result.append(L4Listen(ipaddress.IPv4Address(host), tuple(ranges)))
    return tuple(result)


def hash_key(config: ServiceConfig) -> HashKey:
    """By flow, or by client address alone when the config asks clients to stay put."""
    if config.scheduler == "source" or isinstance(config.persistence, SourceIpPersistence):
        return "source"
    return "flow"


def forwards(server: Server, on_halt: str) -> bool:
    """Whether the server's established flows still reach it: drained ones do; halted
    or failed ones only with `on_halt: keep` (as a layer 7 relay keeps or cuts them)."""
    if server.state == "halt" or server.health != "up":
        return on_halt == "keep"
    return True


def describe(service: Service, macs: Mapping[str, str] | None = None, *,
             table_size: int = DEFAULT_TABLE_SIZE) -> L4Service:
    """What the kernel must do for one layer 4 service now.

    `macs` maps a server address to its MAC on the service's interface (DR only); a DR
    server without one can neither take nor keep flows.
    """
    config = service.config
    l4 = config.l4
    assert l4 is not None, f"service {service.name!r} is not a layer 4 service"
    dr = config.mode == "l4-dr"
    macs = macs or {}
    pool = service.pools["default"]
    servers: list[L4Server] = []
    for server in pool.servers():
        mac = macs.get(server.host) if dr else None
        servers.append(L4Server(server.name, server_mark(service.name, server.name),
                                ipaddress.IPv4Address(server.host), None if dr else server.port, mac,
                                forwards(server, config.on_halt) and (mac is not None or not dr)))
    forwarding = {server.name for server in servers if server.forwarding}
    tier = pool.tier_servers(pool.active)
    taking = [server.name for server in tier if server.available and server.weight > 0 and server.name in forwarding]
    vips = listens(config)
    table = build_table(_weights(tier), seed=service_seed(service.name, str(vips[0].address)), size=table_size,
                        available=taking)
    return L4Service(service.name, "dr" if dr else "nat", vips, l4.interface, tuple(servers), table,
                     hash_key=hash_key(config), source_nat=l4.source_nat, pin_timeout=l4.pin_timeout)


def _weights(servers: Iterable[Server]) -> dict[str, int]:
    """The active tier's servers by weight: the table's base, which changes only with
    the config or a failover, so a state change moves only the buckets it must."""
    return {server.name: server.weight for server in servers}
