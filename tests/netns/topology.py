"""Network namespaces for the kernel layer 4 tests: a switch, a client, a balancer and
three real servers, wired with veth pairs, all of it removed afterwards.

    sw   (bridge br0; br1 for the NAT-behind variant)
    cli  eth0 198.18.0.2/24
    lb   eth0 198.18.0.10/24      (+ eth1 198.19.0.1/24 behind)
    lb2  eth0 198.18.0.20/24      (variant `pair` only)
    rs1..rs3 eth0 198.18.0.11-13/24  (behind: 198.19.0.11-13/24, default route via the lb)

Variants: `flat` (NAT with source_nat), `dr` (the servers hold the VIP on lo, with
arp_ignore=1 and arp_announce=2), `nat-behind` (the servers on a second segment behind
the balancer, which is their default route), and `single`: the balancer namespace
alone with a veth pair lb0/lb0-peer, for checking rulesets against the kernel; `pair`:
two balancers, lb and lb2, and no VIP on either (the VRRP pair adds and moves it).

Addresses are in 198.18.0.0/15 (RFC 2544 benchmarking), so they mean nothing outside.
Nothing touches the host's own namespace: every namespace is named
`medlbt-<pid>-<n>-<role>`, every link is created inside one of them (`ip -n NS link add ...
peer name eth0 netns OTHER`), and every nft and sysctl runs under `ip netns exec`.

Removal: `close()` ends the processes this run started in its namespaces and deletes
the namespaces; it runs on leaving the `with` block whatever happened (also
KeyboardInterrupt), at interpreter exit if a test runner skipped it, and namespaces
left by an earlier run that was killed are removed when the next one starts.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "medlbt"
SEGMENT = ipaddress.IPv4Network("198.18.0.0/24")
BEHIND = ipaddress.IPv4Network("198.19.0.0/24")
CLIENT = "198.18.0.2"
#: Client ports the tests bind themselves to spread flows (names_by_port and its kin):
#: reserved in the client namespace, so that no ephemeral port of another client there
#: (storescu, curl, wrk) holds one when a test binds it.
TEST_CLIENT_PORTS = "40000-45999"
BALANCER = "198.18.0.10"
BALANCER2 = "198.18.0.20"
BALANCER_BEHIND = "198.19.0.1"
SERVERS = {"rs1": 11, "rs2": 12, "rs3": 13}
_numbers = itertools.count(1)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_namespace(netns: str) -> None:
    """End what runs inside (only processes of our own namespaces), then delete it."""
    for pid in _ip("netns", "pids", netns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    _ip("netns", "del", netns, check=False)


def remove_stale() -> list[str]:
    """Delete namespaces of earlier runs whose process is gone (a killed test run)."""
    removed = []
    for netns in _namespaces():
        match = re.fullmatch(rf"{PREFIX}-(\d+)-\d+-\w+", netns)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            _delete_namespace(netns)
            removed.append(netns)
    return removed


@dataclass
class Node:
    """One namespace with its interface on the switch."""

    role: str
    netns: str
    address: str
    interface: str = "eth0"
    mac: str = ""

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout, input=input,
                              check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"in {self.role}: {' '.join(argv)} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")
        return done

    def sysctl(self, **settings: int | str) -> None:
        for key, value in settings.items():
            self.run("sysctl", "-q", "-w", f"{key.replace('__', '.')}={value}")

    def link_bytes(self, interface: str | None = None) -> tuple[int, int]:
        """(received, sent) bytes of an interface, from the kernel's counters."""
        stats = json.loads(self.run("ip", "-s", "-j", "link", "show", interface or self.interface).stdout)[0]
        return int(stats["stats64"]["rx"]["bytes"]), int(stats["stats64"]["tx"]["bytes"])


@dataclass
class Topology:
    """The namespaces of one test; use as a context manager (or the pytest fixture)."""

    variant: str = "flat"  # flat | dr | nat-behind | single | pair
    vip: str = "198.18.0.100"
    #: The topology puts the VIP on the balancer and turns on its IPv4 forwarding; off
    #: when medlb runs there and must do both itself (`l4.manage_vip`).
    balancer_prepared: bool = True
    #: This process and a number, so two topologies of one run never share a name.
    run_id: str = field(default_factory=lambda: f"{os.getpid()}-{next(_numbers)}")

    def __post_init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[str]] = []
        self._closed = False

    # --- building --------------------------------------------------------------------

    def _netns(self, role: str) -> str:
        netns = f"{PREFIX}-{self.run_id}-{role}"
        _ip("netns", "add", netns)
        self.namespaces.append(netns)
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
                       check=True)
        return netns

    def _plug(self, node: Node, bridge: str, port: str, address: str, prefix: int, interface: str) -> None:
        """A veth from the switch's bridge to `node`, created inside the switch namespace."""
        switch = self.nodes["sw"].netns
        _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", interface, "netns", node.netns)
        _ip("-n", switch, "link", "set", port, "master", bridge, "up")
        _ip("-n", node.netns, "addr", "add", f"{address}/{prefix}", "dev", interface)
        _ip("-n", node.netns, "link", "set", interface, "up")

    def create(self) -> Topology:
        remove_stale()
        atexit.register(self.close)
        if self.variant == "single":
            lb = self.nodes["lb"] = Node("lb", self._netns("lb"), "", interface="lb0")
            _ip("-n", lb.netns, "link", "add", "lb0", "type", "veth", "peer", "name", "lb0-peer")
            for interface in ("lb0", "lb0-peer"):
                _ip("-n", lb.netns, "link", "set", interface, "up")
            lb.mac = json.loads(lb.run("ip", "-j", "link", "show", "lb0").stdout)[0]["address"]
            return self
        switch = Node("sw", self._netns("sw"), "")
        self.nodes["sw"] = switch
        bridges = ["br0", "br1"] if self.variant == "nat-behind" else ["br0"]
        for bridge in bridges:
            _ip("-n", switch.netns, "link", "add", bridge, "type", "bridge")
            _ip("-n", switch.netns, "link", "set", bridge, "up")
        balancers = [("lb", BALANCER)] + ([("lb2", BALANCER2)] if self.variant == "pair" else [])
        for role, address in (("cli", CLIENT), *balancers):
            node = Node(role, self._netns(role), address)
            self.nodes[role] = node
            self._plug(node, "br0", f"p-{role}", address, SEGMENT.prefixlen, "eth0")
        self.nodes["cli"].sysctl(net__ipv4__ip_local_reserved_ports=TEST_CLIENT_PORTS)
        if self.variant == "nat-behind":
            self._plug(self.nodes["lb"], "br1", "p-lb1", BALANCER_BEHIND, BEHIND.prefixlen, "eth1")
        for role, host in SERVERS.items():
            network = BEHIND if self.variant == "nat-behind" else SEGMENT
            node = Node(role, self._netns(role), str(network.network_address + host))
            self.nodes[role] = node
            self._plug(node, "br1" if self.variant == "nat-behind" else "br0", f"p-{role}", node.address,
                       network.prefixlen, "eth0")
        for node in self.nodes.values():
            if node.role != "sw":
                node.mac = json.loads(node.run("ip", "-j", "link", "show", node.interface).stdout)[0]["address"]
        self._configure()
        return self

    def _configure(self) -> None:
        if self.variant == "pair":
            return
        lb = self.nodes["lb"]
        # The balancer owns the VIP (it answers ARP for it); never sends ICMP redirects,
        # which NAT on one segment would otherwise provoke.
        if self.balancer_prepared:
            _ip("-n", lb.netns, "addr", "add", f"{self.vip}/32", "dev", "eth0")
        lb.sysctl(net__ipv4__conf__all__send_redirects=0, net__ipv4__conf__eth0__send_redirects=0)
        if self.variant == "dr":
            self.make_dr_servers()
        elif self.balancer_prepared:
            lb.sysctl(net__ipv4__ip_forward=1)
        if self.variant == "nat-behind":
            for server in self.servers:
                _ip("-n", server.netns, "route", "add", "default", "via", BALANCER_BEHIND)

    def make_dr_servers(self) -> None:
        """LVS-DR real servers: the VIP on lo, never answered for or announced (also
        for a pair whose VIP keepalived moves)."""
        for server in self.servers:
            _ip("-n", server.netns, "addr", "add", f"{self.vip}/32", "dev", "lo")
            server.sysctl(net__ipv4__conf__all__arp_ignore=1, net__ipv4__conf__all__arp_announce=2,
                          net__ipv4__conf__eth0__arp_ignore=1, net__ipv4__conf__eth0__arp_announce=2)

    # --- using -----------------------------------------------------------------------

    def __getitem__(self, role: str) -> Node:
        return self.nodes[role]

    @property
    def servers(self) -> list[Node]:
        return [self.nodes[role] for role in SERVERS]

    def start(self, role: str, argv: Sequence[str], *, ready: str | None = "ready",
              timeout: float = 20) -> subprocess.Popen[str]:
        """Start a program in a namespace; with `ready`, wait for that line on stdout."""
        process = subprocess.Popen(self.nodes[role].argv(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        if ready is not None:
            deadline = time.monotonic() + timeout
            assert process.stdout is not None
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    raise RuntimeError(f"{argv[0]} in {role} exited: {process.stderr.read() if process.stderr else ''}")
                if line.strip() == ready:
                    break
            else:
                raise RuntimeError(f"{argv[0]} in {role} did not say {ready!r} within {timeout} s")
        return process

    def __enter__(self) -> Topology:
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        for netns in reversed(self.namespaces):
            _delete_namespace(netns)
        atexit.unregister(self.close)
