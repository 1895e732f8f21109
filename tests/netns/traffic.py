"""Real servers and clients for the layer 4 tests: who answers from which client port,
connections held open across a change, downloads.

Servers (tests/peers) on each server namespace: an HTTP server on HTTP_PORT, a
name-then-echo TCP server on LINE_PORT (connections held open) and one that says its
name and closes first on CLOSING_PORT (client ports reused at once).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from topology import Topology

PEERS = Path(__file__).parents[1] / "peers"
HOLDER = Path(__file__).parent / "peers" / "holder.py"
NAMES = Path(__file__).parent / "peers" / "names.py"
HTTP_PORT = 80
#: Says its name on connect, then echoes (connections held open).
LINE_PORT = 7000
#: Says its name and closes first (client ports reused at once).
CLOSING_PORT = 7001
SIZE = 65537
DOWNLOAD = 50 * 2**20


def start_servers(topo: Topology) -> None:
    for node in topo.servers:
        topo.start(node.role, [sys.executable, str(PEERS / "http_server.py"), "--name", node.role,
                               "--host", "0.0.0.0", "--port", str(HTTP_PORT)])
        topo.start(node.role, [sys.executable, str(PEERS / "tcp_server.py"), "--name", node.role,
                               "--host", "0.0.0.0", "--port", str(LINE_PORT)])
        topo.start(node.role, [sys.executable, str(PEERS / "tcp_server.py"), "--name", node.role,
                               "--host", "0.0.0.0", "--port", str(CLOSING_PORT), "--bulk", "1"])


def curl(topo: Topology, path: str, client_port: int, *extra: str) -> str:
    """GET over a new connection from `client_port`; the server closes it first
    (Connection: close), so the client port is free again at once."""
    return topo["cli"].run("curl", "-sS", "--max-time", "20", "--local-port", str(client_port),
                           "-H", "Connection: close", *extra, f"http://{topo.vip}:{HTTP_PORT}{path}").stdout


def download_at_balancer(topo: Topology, client_port: int, what: str) -> int:
    """Download DOWNLOAD bytes through the VIP; the bytes the balancer's interface
    received meanwhile (DR: the client's ACKs only). Prints both as a share."""
    received_before, _ = topo["lb"].link_bytes()
    size = curl(topo, f"/download/{DOWNLOAD}", client_port, "-o", "/dev/null", "-w", "%{size_download}")
    received = topo["lb"].link_bytes()[0] - received_before
    print(f"\n{what}: {DOWNLOAD >> 20} MiB downloaded; the balancer's interface received {received} bytes "
          f"({received / DOWNLOAD:.2%})")
    assert int(size) == DOWNLOAD
    return received


def fail_over_and_back_by_hand(topo: Topology, medlb, service: str, primaries: set[str], backup: str,
                               first_port: int) -> None:
    """Halting every primary sends new connections to the backup; putting them online
    again does not (failback: manual) until the operator fails back. Uses 80 client
    ports from `first_port`."""
    for name in primaries:
        medlb.set_state(service, name, "halt")
    assert set(names_by_port(topo, range(first_port, first_port + 20)).values()) == {backup}
    for name in primaries:
        medlb.set_state(service, name, "online")
    assert set(names_by_port(topo, range(first_port + 20, first_port + 40)).values()) == {backup}, \
        "failback is manual"
    medlb.api("POST", f"/api/v1/services/{service}/failback")
    assert set(names_by_port(topo, range(first_port + 40, first_port + 80)).values()) == primaries


def names_by_port(topo: Topology, ports: range) -> dict[int, str]:
    """The server that answers a new connection from each client port (CLOSING_PORT)."""
    out = topo["cli"].run(sys.executable, str(NAMES), "--to", f"{topo.vip}:{CLOSING_PORT}",
                          "--ports", f"{ports.start}-{ports.stop - 1}").stdout
    return {int(port): name for port, name in json.loads(out).items()}


class Holder:
    """Connections held open from the client namespace (tests/netns/peers/holder.py)."""

    def __init__(self, topo: Topology, ports: range) -> None:
        self.process = topo.start("cli", [sys.executable, str(HOLDER), "--to", f"{topo.vip}:{LINE_PORT}",
                                          "--ports", f"{ports.start}-{ports.stop - 1}"], ready=None)
        self.servers = {int(port): name for port, name in self._line().items()}

    def _line(self) -> dict[str, str]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the holder ended: {self.process.stderr.read() if self.process.stderr else ''}"
        return json.loads(line)

    def echo(self) -> dict[int, str]:
        assert self.process.stdin is not None
        self.process.stdin.write("echo\n")
        self.process.stdin.flush()
        return {int(port): result for port, result in self._line().items()}
