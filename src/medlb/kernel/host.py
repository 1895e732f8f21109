"""Can this host run the kernel layer 4 services of a config? What `medlb check` says,
and what the kernel data plane asks at start and on reload.

It only reads the host, never changes it, and needs no privilege: the effective
capabilities of this process, whether `nft` and `conntrack` are installed, and the
interfaces with their IPv4 addresses. `read_host` does that reading; `problems_for`
decides over those facts alone, so every rule is tested on plain data. A config without
L4 services asks nothing of the host and gets no problem.

The answers hold for the host and user that ask: `medlb check` on a laptop says what the
laptop lacks (`medlb check --no-host` checks the file alone).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from medlb.config.models import L4_MODES

if TYPE_CHECKING:
    from medlb.config.models import Config, ServiceConfig

PathKey = tuple[str | int, ...]
Level = Literal["error", "advisory"]

#: Linux capability number of CAP_NET_ADMIN (linux/capability.h): what nftables needs.
CAP_NET_ADMIN = 12


@dataclass(frozen=True)
class HostProblem:
    """One thing this host lacks for a service (`service` None: for every L4 service).
    `path_key` is where in the config file it belongs (`("services", 0, "l4", "interface")`),
    so it is printed with that key's line. An `error` stops `medlb check` and the kernel
    data plane; an `advisory` is shown and medlb runs."""

    service: str | None
    path_key: PathKey
    message: str
    level: Level = "error"


@dataclass(frozen=True)
class HostFacts:
    """What the layer 4 checks need to know about the host, read once."""

    uid: int
    #: CAP_NET_ADMIN is in this process's effective set (root has it).
    net_admin: bool
    nft: str | None
    conntrack: str | None
    #: Every interface and its IPv4 addresses with their prefix length.
    interfaces: Mapping[str, tuple[ipaddress.IPv4Interface, ...]] = field(default_factory=dict)
    #: Why the addresses could not be read (then `interfaces` has names only).
    addresses_unknown: str | None = None


def _net_admin() -> bool:
    """CAP_NET_ADMIN in the effective set, from /proc/self/status (root has it; so has a
    systemd unit with AmbientCapabilities=CAP_NET_ADMIN)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def addresses() -> dict[str, tuple[ipaddress.IPv4Interface, ...]]:
    """Interface name -> its IPv4 addresses, from `ip -j addr show` (no privilege needed)."""
    done = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True)
    found: dict[str, tuple[ipaddress.IPv4Interface, ...]] = {}
    for link in json.loads(done.stdout):
        found[link["ifname"]] = tuple(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
                                      for info in link.get("addr_info", []) if info.get("family") == "inet")
    return found


def local_addresses() -> frozenset[str]:
    """This host's IPv4 addresses, as the config writes them; none when `ip` cannot tell.
    A server at one of them on a port medlb listens on with 0.0.0.0 is medlb itself."""
    try:
        return frozenset(str(address.ip) for found in addresses().values() for address in found)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return frozenset()


def read_host() -> HostFacts:
    """The facts of this host, as this process sees them (its network namespace, its user)."""
    interfaces: dict[str, tuple[ipaddress.IPv4Interface, ...]]
    unknown = None
    try:
        interfaces = addresses()
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        interfaces = {name: () for _, name in socket.if_nameindex()}
        unknown = f"`ip -j addr show` failed: {exc}"
    return HostFacts(os.geteuid(), _net_admin(), shutil.which("nft"), shutil.which("conntrack"),
                     interfaces, unknown)


def host_problems(config: Config, facts: HostFacts | None = None) -> list[HostProblem]:
    """What this host lacks for the config's L4 services; reads the host only when the
    config has one."""
    if not any(service.mode in L4_MODES for service in config.services):
        return []
    return problems_for(config, facts if facts is not None else read_host())


def _networks(addresses: tuple[ipaddress.IPv4Interface, ...]) -> str:
    return ", ".join(map(str, addresses)) or "no IPv4 address"


def _servers(service: ServiceConfig) -> list[tuple[PathKey, str, ipaddress.IPv4Address]]:
    """(path, name, address) of every server, primary and backup; the config loader has
    made sure they are IPv4 literals."""
    return [((group, index, "address"), server.name, ipaddress.IPv4Address(server.address.host))
            for group, members in (("servers", service.servers), ("backup", service.backup))
            for index, server in enumerate(members)]


def problems_for(config: Config, facts: HostFacts) -> list[HostProblem]:
    """The decisions, over `facts` alone."""
    found: list[HostProblem] = []
    l4 = [(index, service) for index, service in enumerate(config.services) if service.mode in L4_MODES]
    if not l4:
        return found
    first_index = l4[0][0]
    used = sorted({service.mode for _, service in l4})
    modes = f"modes {' and '.join(used)} need" if len(used) > 1 else f"mode {used[0]} needs"
    if not facts.net_admin:
        found.append(HostProblem(None, ("services", first_index, "mode"),
                                 f"{modes} root (CAP_NET_ADMIN) to program nftables; "
                                 f"this process runs as uid {facts.uid} without it"))
    if facts.nft is None:
        found.append(HostProblem(None, ("services", first_index, "mode"),
                                 f"nft is not installed (Debian package nftables); {modes} it to program "
                                 "the kernel"))
    for index, service in l4:
        base: PathKey = ("services", index)
        assert service.l4 is not None  # the model requires it for the L4 modes
        interface = service.l4.interface
        if service.mode == "l4-nat" and service.on_halt == "close" and facts.conntrack is None:
            found.append(HostProblem(service.name, base + ("on_halt",),
                                     "on_halt: close in mode l4-nat cuts established connections with conntrack, "
                                     "which is not installed (Debian package conntrack)"))
        if interface not in facts.interfaces:
            found.append(HostProblem(service.name, base + ("l4", "interface"),
                                     f"interface {interface} does not exist on this host (it has "
                                     f"{', '.join(sorted(facts.interfaces)) or 'none'})"))
            continue
        addresses = facts.interfaces[interface]
        if service.mode == "l4-dr":
            found.extend(_dr_segment(service, base, interface, addresses, facts.addresses_unknown))
        elif not service.l4.source_nat:
            found.append(_nat_route_back(service, base, facts))
    return found


def _dr_segment(service: ServiceConfig, base: PathKey, interface: str,
                addresses: tuple[ipaddress.IPv4Interface, ...], unknown: str | None) -> list[HostProblem]:
    """Direct Routing rewrites only the destination MAC, so every server must be
    reachable by a frame sent out of `interface`: on one of its subnets."""
    if unknown is not None:
        return [HostProblem(service.name, base + ("l4", "interface"),
                            f"the addresses of {interface} could not be read ({unknown}), so nobody checked that "
                            "the servers are on its segment, as Direct Routing needs", "advisory")]
    found = []
    for path, name, address in _servers(service):
        if not any(address in network.network for network in addresses):
            found.append(HostProblem(service.name, base + path,
                                     f"server {name} {address} is not on a subnet of {interface} "
                                     f"({_networks(addresses)}): Direct Routing sends frames, so servers must "
                                     "be on the same segment"))
    return found


def route_back_via(service: ServiceConfig, facts: HostFacts) -> list[str]:
    """The balancer's addresses an l4-nat service's servers route their replies through:
    those on a subnet of a server, else those on l4.interface; never a VIP."""
    assert service.l4 is not None
    vips = {address.host for address in service.addresses}
    via: list[str] = []
    for _, _, address in _servers(service):
        for own_addresses in facts.interfaces.values():
            via.extend(str(own.ip) for own in own_addresses if address in own.network and str(own.ip) not in vips)
    if not via:
        via = [str(own.ip) for own in facts.interfaces.get(service.l4.interface, ()) if str(own.ip) not in vips]
    return list(dict.fromkeys(via))


def _nat_route_back(service: ServiceConfig, base: PathKey, facts: HostFacts) -> HostProblem:
    """Without source_nat the servers answer the client's own address, so their reply
    must come back through the balancer to be translated back; say through which
    address."""
    gateway = " or ".join(route_back_via(service, facts)) or "this balancer's address"
    return HostProblem(service.name, base + ("l4",),
                       "servers must route their replies back through this balancer (their default route or a "
                       f"route to the clients via {gateway}); l4.source_nat: true needs no route but the servers "
                       "then see the balancer's address instead of the client's", "advisory")
