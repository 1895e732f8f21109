"""The host facts and settings the kernel data plane needs besides nftables.

The balancer's own MAC on an interface (the source MAC of DR frames), the servers'
MACs from the neighbour table, the VIP addresses medlb manages, IPv4 forwarding for
NAT, and conntrack entries cut by mark. Each is read or changed in the network
namespace this process runs in, which is how the tests run medlb inside one.

Blocking calls (subprocesses, /proc reads): the data plane runs them in a thread.
"""

from __future__ import annotations

import fcntl
import ipaddress
import re
import shutil
import socket
import struct
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

#: ioctl(2) SIOCGIFHWADDR: an interface's hardware address.
_SIOCGIFHWADDR = 0x8927
#: /proc/net/arp's flag for an entry whose MAC is known (ATF_COM).
_ATF_COM = 0x2
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
_FLOW_ENTRIES = re.compile(r"\b(\d+) flow entries have been")


class HostError(RuntimeError):
    """A host command failed; the message names the command and what it said."""


def _run(argv: Sequence[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    binary = shutil.which(argv[0])
    if binary is None:
        raise HostError(f"{argv[0]} is not installed")
    try:
        return subprocess.run([binary, *argv[1:]], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HostError(f"{' '.join(argv)} did not finish within {timeout:g} s") from None


def interface_mac(interface: str) -> str:
    """The MAC of one of this host's interfaces, lower case; OSError if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", interface.encode()[:15])
        answer = fcntl.ioctl(sock.fileno(), _SIOCGIFHWADDR, request)
    return ":".join(f"{byte:02x}" for byte in answer[18:24])


def neighbours(path: Path = Path("/proc/net/arp")) -> dict[tuple[str, str], str]:
    """(address, interface) -> MAC for every neighbour whose MAC is known.

    Read from /proc/net/arp rather than netlink: a small file, no dependency, and the
    same answer `ip neigh` gives for complete entries (REACHABLE, STALE, PERMANENT...).
    """
    found: dict[tuple[str, str], str] = {}
    for line in path.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 6:
            continue
        address, _, flags, mac, _, device = fields[:6]
        if int(flags, 16) & _ATF_COM and mac != "00:00:00:00:00:00":
            found[(address, device)] = mac.lower()
    return found


#: Interface name -> its IPv4 addresses, as `kernel.host.addresses()` reads them.
Addresses = Mapping[str, tuple[ipaddress.IPv4Interface, ...]]


def add_vip(address: ipaddress.IPv4Address, interface: str, present: Addresses) -> bool:
    """Add a VIP as a /32 to an interface; False when it was already there."""
    if any(item.ip == address for item in present.get(interface, ())):
        return False
    done = _run(["ip", "addr", "add", f"{address}/32", "dev", interface])
    if done.returncode != 0 and "File exists" not in done.stderr:
        raise HostError(f"cannot add {address} to {interface}: {done.stderr.strip()}")
    return done.returncode == 0


def remove_vip(address: ipaddress.IPv4Address, interface: str, present: Addresses) -> bool:
    """Remove a VIP medlb added; False when it was not there (or its interface is gone)."""
    if not any(item.ip == address and item.network.prefixlen == 32 for item in present.get(interface, ())):
        return False
    done = _run(["ip", "addr", "del", f"{address}/32", "dev", interface])
    if done.returncode != 0:
        raise HostError(f"cannot remove {address} from {interface}: {done.stderr.strip()}")
    return True


def enable_ip_forward(path: Path = IP_FORWARD) -> bool:
    """Turn IPv4 forwarding on; True when this call turned it on (the caller logs that)."""
    if path.read_text().strip() == "1":
        return False
    path.write_text("1\n")
    return True


def conntrack_delete(mark: int) -> int:
    """Delete the conntrack entries of one server (its mark): its NAT connections end.
    How many were deleted."""
    done = _run(["conntrack", "-D", "-p", "tcp", "--mark", str(mark)])
    # conntrack prints "N flow entries have been deleted" on stderr; 0 entries is exit 1.
    return _flow_count(done.stderr)


def conntrack_by_mark() -> Counter[int]:
    """Connections conntrack holds, by mark: one dump for every server of every NAT
    service rather than one `conntrack -L --mark` process per server."""
    done = _run(["conntrack", "-L", "-p", "tcp"])
    return Counter(int(found.group(1)) for found in _MARK.finditer(done.stdout))


#: The mark field of a `conntrack -L` line (decimal, as conntrack prints it).
_MARK = re.compile(r"\bmark=(\d+)\b")


def _flow_count(stderr: str) -> int:
    """N from conntrack's summary line, which 1.4.7 prefixes with its name and version:
    `conntrack v1.4.7 (conntrack-tools): N flow entries have been shown.`"""
    found = _FLOW_ENTRIES.search(stderr)
    return int(found.group(1)) if found else 0
