"""Layer 4 rows: `l4-dr` and `l4-nat` forwarded by the kernel, against the direct path.

Unlike the other scenarios these run in network namespaces (tests/netns/topology.py:
a switch, a client, the balancer and three servers, removed afterwards whatever
happens), because the kernel forwards between hosts, not on loopback. The peer is the
same topology without the balancer in the path: the clients connect to the servers'
own addresses. A real medlb runs in the balancer's namespace (tests/netns/medlb_node.py).

- Bulk: iperf3 servers on each server, one per port of BULK_PORTS; one `iperf3 -R`
  client per port (servers to client, the direction DR serves), each from its own
  client address. The services hash on the client address (`persistence: source-ip`)
  so that an iperf3 test's control and data connections reach the same server; the
  extra client addresses spread the clients over the servers.
- New connections: wrk with `Connection: close` to nginx on each server, one wrk per
  server for both paths (through the VIP, all three go to the VIP).
- The control process's CPU: utime + stime from /proc over the runs through medlb,
  as a share of one core.

Needs root, ip, nft and iperf3 (wrk and nginx for connections); without them the rows
say why they were skipped and the rest of the bench runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.common import PYTHON, ROOT, Row, alternate, nginx_config, workdir

NETNS_HELPERS = ROOT / "tests" / "netns"
TCP_SERVER = ROOT / "tests" / "peers" / "tcp_server.py"
#: One iperf3 server per port on every server, one client per port.
BULK_PORTS = range(5201, 5205)
#: The client's extra addresses, one per bulk client (the topology uses .2, .10-.13, .100).
CLIENT_ADDRESSES = [f"198.18.0.{31 + index}" for index in range(len(BULK_PORTS))]
HTTP_PORT = 80
#: The health checks' port: a small TCP server, so no check ever lands on iperf3 or nginx.
CHECK_PORT = 7000
HEALTH = {"type": "tcp", "port": CHECK_PORT, "interval": "1s", "timeout": "1s", "fall": 2, "rise": 2}
DR_TARGET, NAT_TARGET, CONNECTIONS_TARGET, CPU_TARGET = ">= 0.95", ">= 0.9", ">= 0.8", "<= 0.02"
#: Connections per wrk process (three of them, one per server).
WRK_CONNECTIONS = 12


def _netns_helpers() -> tuple[ModuleType, ModuleType]:
    """tests/netns's topology and medlb_node modules, as the tests import them."""
    for folder in (NETNS_HELPERS.parent, NETNS_HELPERS):  # tests/ (helpers) and tests/netns
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import medlb_node
    import topology

    return topology, medlb_node


def _missing(*tools: str) -> str | None:
    """Why the rows cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    absent = [tool for tool in ("ip", "nft", *tools) if shutil.which(tool) is None]
    return f"{', '.join(absent)} missing (make bench installs them)" if absent else None


def _skipped(names: list[tuple[str, str, str]], reason: str) -> list[Row]:
    return [Row(name, unit, None, None, "direct", None, target, note=f"skipped: {reason}")
            for name, unit, target in names]


# --- measuring -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process (not its children), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ThroughMeter:
    """What the runs through medlb cost (not the direct ones): the control process's CPU,
    and the bytes the balancer's and the client's interfaces received."""

    def __init__(self, topo: Any, pid: int) -> None:
        self.topo, self.pid = topo, pid
        self.cpu = self.wall = 0.0
        self.balancer_bytes = self.client_bytes = 0

    def _received(self) -> tuple[int, int]:
        return self.topo["lb"].link_bytes()[0], self.topo["cli"].link_bytes()[0]

    def around(self, measure: Callable[[], float]) -> Callable[[], float]:
        def measured() -> float:
            (balancer, client), cpu, started = self._received(), cpu_seconds(self.pid), time.monotonic()
            value = measure()
            self.cpu += cpu_seconds(self.pid) - cpu
            self.wall += time.monotonic() - started
            balancer_after, client_after = self._received()
            self.balancer_bytes += balancer_after - balancer
            self.client_bytes += client_after - client
            return value
        return measured

    def crossing_note(self) -> str:
        share = self.balancer_bytes / self.client_bytes if self.client_bytes else 0.0
        return (f"through medlb, the balancer's interface received {share:.2%} of the bytes the client "
                "received")

    def row(self, name: str) -> Row:
        percent = 100 * self.cpu / self.wall if self.wall else 0.0
        return Row(name, "% of a core", round(percent, 2), 100.0, "one core", round(percent / 100, 4), CPU_TARGET,
                   note=f"{self.cpu:.2f} s CPU over {self.wall:.1f} s; health checks every 1 s on 3 servers")


def _run_together(node: Any, commands: list[list[str]], timeout: float) -> list[str]:
    """Start every command in the namespace at once; their outputs, in order."""
    processes = [subprocess.Popen(node.argv(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for argv in commands]
    outputs = []
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out or err)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def iperf_reverse(topo: Any, targets: list[tuple[str, str, int]], seconds: int) -> float:
    """Gbit/s received by the client from all (client address, host, port) at once."""
    error = ""
    for _ in range(3):
        commands = [["iperf3", "-c", host, "-p", str(port), "-B", source, "-R", "-t", str(seconds), "-J",
                     "--connect-timeout", "3000"] for source, host, port in targets]
        results = [json.loads(out or "{}") for out in _run_together(topo["cli"], commands, seconds + 30)]
        if all("sum_received" in result.get("end", {}) for result in results):
            return sum(result["end"]["sum_received"]["bits_per_second"] for result in results) / 1e9
        # An iperf3 server runs one test at a time and may still be closing the last one.
        error = "; ".join(result.get("error", "no result") for result in results if "error" in result)
        time.sleep(1)
    raise RuntimeError(f"iperf3 failed: {error}")


def wrk_close(topo: Any, urls: list[str], seconds: int, errors: list[str]) -> float:
    """New connections per second (one request each, `Connection: close`), all wrk summed."""
    commands = [["wrk", "-t", "1", "-c", str(WRK_CONNECTIONS), "-d", f"{seconds}s", "-H", "Connection: close", url]
                for url in urls]
    total = 0.0
    for out in _run_together(topo["cli"], commands, seconds + 30):
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if match is None:
            raise RuntimeError(f"wrk gave no rate: {out[-400:]}")
        total += float(match.group(1))
        errors += re.findall(r"Socket errors: .*|Non-2xx.*", out)
    return total


# --- the topology --------------------------------------------------------------------


def _wait_listening(topo: Any, ports: set[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    for node in topo.servers:
        while True:
            listing = node.run("ss", "-Hltn").stdout
            found = {int(match) for match in re.findall(r":(\d+)\s", listing)}
            if ports <= found:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.role}: not listening on {sorted(ports - found)}")
            time.sleep(0.1)


def _start_servers(topo: Any, directory: Path, with_nginx: bool) -> None:
    """iperf3 on every bulk port, the check server and (for connections) nginx, on each server."""
    directory.chmod(0o755)  # nginx's workers run unprivileged
    for node in topo.servers:
        for port in BULK_PORTS:
            topo.start(node.role, ["iperf3", "-s", "-p", str(port)], ready=None)
        topo.start(node.role, [PYTHON, str(TCP_SERVER), "--name", node.role, "--host", "0.0.0.0",
                               "--port", str(CHECK_PORT)])
        if with_nginx:
            home = directory / node.role
            home.mkdir()
            topo.start(node.role, ["nginx", "-c", str(nginx_config(HTTP_PORT, home, "0.0.0.0")), "-p", str(home)],
                       ready=None)
    _wait_listening(topo, {*BULK_PORTS, CHECK_PORT} | ({HTTP_PORT} if with_nginx else set()))


@contextmanager
def balanced(variant: str, services: Callable[[Any], list[dict[str, Any]]], with_nginx: bool,
             ) -> Iterator[tuple[Any, Any]]:
    """The topology with servers running and medlb steering `services`; all removed after."""
    topology, medlb_node = _netns_helpers()
    directory = workdir(f"l4-{variant}")
    try:
        with topology.Topology(variant, balancer_prepared=False) as topo:
            for address in CLIENT_ADDRESSES:
                topo["cli"].run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
            _start_servers(topo, directory, with_nginx)
            configured = services(topo)
            medlb = medlb_node.MedlbNode(topo["lb"], directory, configured, log={"level": "warning"}).start()
            try:
                for service in configured:
                    medlb.wait_kernel(service["name"], {server["name"] for server in service["servers"]})
                yield topo, medlb
            finally:
                medlb.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _service(topo: Any, name: str, mode: str, ports: str, l4: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "mode": mode, "listen": [f"{topo.vip}:{ports}"], "l4": l4, "health": HEALTH,
            "servers": [{"name": node.role, "address": node.address} for node in topo.servers], **extra}


def _bulk_service(topo: Any, mode: str, l4: dict[str, Any]) -> dict[str, Any]:
    """The bulk ports, and the check port through the VIP as well, where `_answering`
    asks which server a client address reaches."""
    service = _service(topo, "bulk", mode, f"{BULK_PORTS.start}-{BULK_PORTS.stop - 1}", l4,
                       scheduler="maglev", persistence="source-ip")
    service["listen"].append(f"{topo.vip}:{CHECK_PORT}")
    return service


#: Connects from an address to the VIP's check port; the server there says its name.
_WHO_ANSWERS = ("import socket, sys\n"
                "with socket.create_connection((sys.argv[2], int(sys.argv[3])), 5, (sys.argv[1], 0)) as sock:\n"
                "    print(sock.makefile().readline().strip())")


def _answering(topo: Any) -> dict[str, Any]:
    """The server node that each client address reaches through the VIP."""
    nodes = {node.role: node for node in topo.servers}
    names = {source: topo["cli"].run(PYTHON, "-c", _WHO_ANSWERS, source, topo.vip, str(CHECK_PORT)).stdout.strip()
             for source in CLIENT_ADDRESSES}
    return {source: nodes[name] for source, name in names.items()}


def _bulk_targets(topo: Any, servers: dict[str, Any] | None) -> list[tuple[str, str, int]]:
    """Client i from its own address to port i: through the VIP, or (given the server each
    address reaches through the VIP) straight to that same server."""
    return [(source, topo.vip if servers is None else servers[source].address, port)
            for source, port in zip(CLIENT_ADDRESSES, BULK_PORTS)]


def _timing(quick: bool) -> tuple[int, int]:
    """(seconds per run, pairs)."""
    return (1, 1) if quick else (3, 5)


# --- the scenarios -------------------------------------------------------------------

BULK = f"{len(BULK_PORTS)} iperf3 -R clients"
DR_BULK = f"L4 DR (l4-dr) bulk, servers to client, {BULK}"
NAT_BULK = f"L4 NAT (l4-nat, source_nat) bulk, servers to client, {BULK}"
NAT_CONNECTIONS = (f"L4 NAT (l4-nat, source_nat) new connections per second, 3 wrk x {WRK_CONNECTIONS} "
                   "connections, Connection: close")
DR_CPU = "L4 medlb control process CPU while the kernel forwards (DR bulk)"
NAT_CPU = "L4 medlb control process CPU while the kernel forwards (NAT bulk and connections)"
DR_ROWS = [(DR_BULK, "Gbit/s", DR_TARGET), (DR_CPU, "% of a core", CPU_TARGET)]
NAT_ROWS = [(NAT_BULK, "Gbit/s", NAT_TARGET), (NAT_CONNECTIONS, "conn/s", CONNECTIONS_TARGET),
            (NAT_CPU, "% of a core", CPU_TARGET)]


def _bulk_row(topo: Any, meter: ThroughMeter, name: str, target: str, quick: bool) -> Row:
    seconds, pairs = _timing(quick)
    servers = _answering(topo)
    through = meter.around(lambda: iperf_reverse(topo, _bulk_targets(topo, None), seconds))
    direct = lambda: iperf_reverse(topo, _bulk_targets(topo, servers), seconds)  # noqa: E731
    if not quick:
        iperf_reverse(topo, _bulk_targets(topo, None), 1)  # warm up: ARP, pins, the servers' first test
    rate, peer, ratio, results = alternate(pairs, through, direct)
    spread = Counter(node.role for node in servers.values())
    return Row(name, "Gbit/s", round(rate, 2), round(peer, 2), "direct to the same servers", round(ratio, 3),
               target, note=f"{meter.crossing_note()}; clients per server: "
                            f"{', '.join(f'{role} {count}' for role, count in sorted(spread.items()))}",
               pairs=results)


def l4_dr(quick: bool) -> list[Row]:
    reason = _missing("iperf3")
    if reason:
        return _skipped(DR_ROWS, reason)
    with balanced("dr", lambda topo: [_bulk_service(topo, "l4-dr", {"interface": "eth0"})], False) as (topo, medlb):
        meter = ThroughMeter(topo, medlb.proc.pid)
        return [_bulk_row(topo, meter, DR_BULK, DR_TARGET, quick), meter.row(DR_CPU)]


def l4_nat(quick: bool) -> list[Row]:
    reason = _missing("iperf3", "wrk", "nginx")
    if reason:
        return _skipped(NAT_ROWS, reason)
    l4 = {"interface": "eth0", "source_nat": True}

    def services(topo: Any) -> list[dict[str, Any]]:
        return [_bulk_service(topo, "l4-nat", l4), _service(topo, "web", "l4-nat", str(HTTP_PORT), l4)]

    with balanced("flat", services, True) as (topo, medlb):
        meter = ThroughMeter(topo, medlb.proc.pid)
        rows = [_bulk_row(topo, meter, NAT_BULK, NAT_TARGET, quick)]
        seconds, pairs = _timing(quick)
        errors: list[str] = []
        vip_urls = [f"http://{topo.vip}:{HTTP_PORT}/"] * len(topo.servers)
        direct_urls = [f"http://{node.address}:{HTTP_PORT}/" for node in topo.servers]
        through = meter.around(lambda: wrk_close(topo, vip_urls, seconds, errors))
        medlb_rate, direct_rate, ratio, results = alternate(pairs, through,
                                                            lambda: wrk_close(topo, direct_urls, seconds, errors))
        rows.append(Row(NAT_CONNECTIONS, "conn/s", round(medlb_rate),
                        round(direct_rate), "direct to the servers", round(ratio, 3), CONNECTIONS_TARGET,
                        note="; ".join(sorted(set(errors))), pairs=results))
        rows.append(meter.row(NAT_CPU))
        return rows
