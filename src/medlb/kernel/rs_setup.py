"""`medlb rs-setup`: what a real server's administrator runs for a layer 4 service.

Plain text out, nothing run: the commands go to another team's hosts, so they are
printed for that team to read, adapt and run. DR follows the LVS-DR practice (the
shared L4 reference): the VIP on `lo` as a /32, never answered for in ARP
(`arp_ignore=1`) nor used as an ARP source (`arp_announce=2`), on `all` and on the
NIC, since the kernel takes the larger of the two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medlb.config.models import ServiceConfig

SYSCTL_FILE = "/etc/sysctl.d/90-medlb-dr.conf"
NETWORKD_FILE = "/etc/systemd/network/10-medlb-lo.network"


def _vips(service: ServiceConfig) -> list[str]:
    return list(dict.fromkeys(address.host for address in service.addresses))


def _ports(service: ServiceConfig) -> str:
    return ", ".join(str(port) for port in sorted({address.port for address in service.addresses}))


def _server_list(service: ServiceConfig) -> str:
    servers = [*service.servers, *service.backup]
    return ", ".join(f"{server.name} ({server.address.host})" for server in servers)


def _sysctls(nic: str) -> list[tuple[str, int]]:
    return [(f"net.ipv4.conf.{where}.{key}", value)
            for where in ("all", nic) for key, value in (("arp_ignore", 1), ("arp_announce", 2))]


def dr_setup(service: ServiceConfig, nic: str = "eth0") -> str:
    """The commands and files a Direct Routing server needs, now and at every boot."""
    vips = _vips(service)
    lines = [
        f"# Real server set-up for service {service.name} (l4-dr, Direct Routing).",
        f"# Run as root on each of: {_server_list(service)}.",
        f"# {nic} is the server's interface on the balancer's segment (medlb rs-setup --nic NAME).",
        "#",
        "# The balancer hands each client packet on unchanged, addressed to the VIP, so every",
        "# server must accept packets for the VIP (on lo, as a /32) and must never answer ARP",
        "# for it, or clients would bypass the balancer. Each server answers the client",
        "# directly, from the VIP, through its own default route.",
        "",
        "# 1. Now (lost at reboot):",
        *(f"ip addr add {vip}/32 dev lo" for vip in vips),
        *(f"sysctl -w {key}={value}" for key, value in _sysctls(nic)),
        "",
        f"# 2. At every boot: the ARP settings in {SYSCTL_FILE}",
        f"cat > {SYSCTL_FILE} <<'EOF'",
        *(f"{key} = {value}" for key, value in _sysctls(nic)),
        "EOF",
        "",
        "# and the VIP on lo, with systemd-networkd:",
        f"cat > {NETWORKD_FILE} <<'EOF'",
        "[Match]",
        "Name=lo",
        "",
        "[Network]",
        "Address=127.0.0.1/8",
        *(f"Address={vip}/32" for vip in vips),
        "EOF",
        "",
        "# or with ifupdown, below 'iface lo inet loopback' in /etc/network/interfaces:",
        *(f"#     up   ip addr add {vip}/32 dev lo" for vip in vips),
        *(f"#     down ip addr del {vip}/32 dev lo" for vip in vips),
        "",
        "# 3. The service on each server:",
        f"#  - listens on ports {_ports(service)} (DR cannot change the port) on the VIP and on the",
        "#    server's own address, where medlb's health checks go; 0.0.0.0 covers both;",
        "#  - a stateful firewall between the server and the clients sees only the replies.",
        "# Check: `ip -4 addr show dev lo` lists the VIP; from another host on the segment,",
        f"# `arping -c 3 {vips[0]}` is answered by the balancer's MAC only.",
    ]
    return "\n".join(lines) + "\n"


def nat_setup(service: ServiceConfig, via: list[str]) -> str:
    """What an l4-nat service's servers need: nothing with source_nat, else a route
    back through the balancer (`via`: its addresses towards the servers, if known)."""
    assert service.l4 is not None
    own_ports = sorted({server.address.port for server in [*service.servers, *service.backup]
                        if server.address.port is not None})
    ports = ", ".join(map(str, own_ports)) if own_ports else _ports(service)
    head = [f"# Real server set-up for service {service.name} (l4-nat).",
            f"# Servers: {_server_list(service)}; each listens on its own address, port(s) {ports}."]
    if service.l4.source_nat:
        return "\n".join(head + [
            "# With l4.source_nat the balancer connects from its own address: the servers need no",
            "# route and no setting from medlb. They see the balancer's address as the client, so",
            "# a server that allows callers by address must allow the balancer's.",
            "# Nothing to run.",
        ]) + "\n"
    gateway = via[0] if via else "BALANCER"
    lines = head + [
        "# The balancer rewrites only the destination: the servers see each client's own",
        "# address and must send their replies back through the balancer, which rewrites",
        "# them back. A reply that goes another way reaches the client from an address it",
        "# never called, and the connection fails.",
    ]
    if not via:
        lines.append("# BALANCER: the balancer's address on the servers' segment (not a VIP).")
    elif len(via) > 1:
        lines.append(f"# The balancer's addresses towards the servers: {', '.join(via)}; use the one on their segment.")
    lines += [
        "",
        "# Either make the balancer the servers' default route (run as root on each server):",
        f"ip route replace default via {gateway}",
        "# or route only the clients' networks through it (CLIENTS: for example 10.20.0.0/16):",
        f"ip route add CLIENTS via {gateway}",
        "",
        "# At every boot, with systemd-networkd, in the server's .network file:",
        "#   [Route]",
        f"#   Gateway={gateway}",
        "#   Destination=CLIENTS      (leave out for the default route)",
        "# or with ifupdown, in its stanza of /etc/network/interfaces:",
        f"#   gateway {gateway}        (or: up ip route add CLIENTS via {gateway})",
    ]
    return "\n".join(lines) + "\n"
