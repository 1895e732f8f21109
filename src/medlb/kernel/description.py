"""What the kernel must do for the layer 4 services: a plain description, no I/O.

The runtime (services, operator states, health, resolved MACs) is turned into these
records, and `ruleset` renders them to nftables commands. They hold only what the
kernel needs, already resolved: addresses, MACs, the Maglev table, stable marks.

A server's three kernel states, derived from its state and health by the caller:
- in the Maglev table: takes new flows (online and up);
- `forwarding` but not in the table: its established flows go on (drain; halt or down
  with `on_halt: keep`): DR pins and NAT conntrack still reach it;
- not `forwarding`: nothing reaches it (halt or down with `on_halt: close`, a DR
  server whose MAC is unknown).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Literal

from medlb.kernel.maglev import MaglevTable

Mode = Literal["dr", "nat"]
#: What the kernel hashes and pins by: the flow (`ip saddr . tcp sport`, the default)
#: or the client address alone (`scheduler: source`, `persistence: source-ip`).
HashKey = Literal["flow", "source"]

#: Pins a DR service's pin map holds before new flows go unpinned (see ruleset).
DEFAULT_PIN_CAPACITY = 1_048_576
#: Longer than an idle DICOM association or MLLP link is left open.
DEFAULT_PIN_TIMEOUT = 7200.0


def server_mark(service: str, server: str) -> int:
    """The 32-bit mark that stands for a server in the kernel's maps and in conntrack.

    Derived from the names, so it is the same on every node and after a restart (pins
    and conntrack entries written by an earlier process still point at the right
    server) and differs between services (`conntrack -D --mark` cuts one server only).
    Never 0, which conntrack uses for "no mark".
    """
    digest = hashlib.blake2b(f"{service}\0{server}".encode(), digest_size=4, person=b"medlb-mark").digest()
    return int.from_bytes(digest, "big") or 1


@dataclass(frozen=True)
class L4Server:
    name: str
    mark: int
    address: ipaddress.IPv4Address
    #: NAT: the port to connect to; None means the port the client called.
    port: int | None = None
    #: DR: the server's MAC on the service's interface; None while unknown.
    mac: str | None = None
    #: Established flows still reach it (see the module docstring).
    forwarding: bool = True


@dataclass(frozen=True)
class L4Listen:
    """One VIP address and the TCP ports (inclusive ranges) clients call on it."""

    address: ipaddress.IPv4Address
    ports: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class L4Service:
    name: str
    mode: Mode
    listens: tuple[L4Listen, ...]
    #: DR: where client frames arrive and leave again. NAT: where the VIP lives (for
    #: the record; the NAT rules match by address and the routes decide the rest).
    interface: str
    #: Every server the kernel may send to, primary and backup, whatever its state.
    servers: tuple[L4Server, ...]
    #: Which server takes a new flow in each bucket (its seed is the kernel's jhash seed).
    table: MaglevTable
    hash_key: HashKey = "flow"
    #: NAT: masquerade to the balancer's address, so servers need no route back.
    source_nat: bool = False
    #: DR: how long a flow's pin outlives its last packet, in seconds.
    pin_timeout: float = DEFAULT_PIN_TIMEOUT
    pin_capacity: int = DEFAULT_PIN_CAPACITY

    def server(self, name: str) -> L4Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)


@dataclass(frozen=True)
class L4Ruleset:
    """Everything medlb forwards in the kernel, for one full apply."""

    services: tuple[L4Service, ...]
    #: DR: the balancer's own MAC on each interface a DR service uses (the source MAC
    #: of forwarded frames, so switches learn nothing wrong).
    interface_macs: tuple[tuple[str, str], ...] = ()

    def interface_mac(self, interface: str) -> str:
        for name, mac in self.interface_macs:
            if name == interface:
                return mac
        raise KeyError(interface)
