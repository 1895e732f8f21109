"""The issue's own config, as written, in the namespace topology: a PACS retrieval VIP
in Direct Routing (DICOM on 104 and 11112, C-ECHO checks, on_halt close, a backup
cluster with manual failback) beside a VNA VIP in NAT with source NAT on a port range.

Two substitutions only: the balancer's interface is `eth0` in the topology (the
issue's `lb0`), and its backup server `dr1` is the topology's third server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from conftest import need_tool
from dicom_helpers import sample_files
from l4_helpers import ISSUE_EXAMPLE
from medlb_node import MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from topology import CLIENT

PEERS = Path(__file__).parents[1] / "peers"



def names(topo, port: int, count: int, first_client_port: int) -> set[str]:
    """Who answers `count` new connections to the NAT VIP's `port`."""
    script = ("import socket,sys\n"
              "seen=set()\n"
              f"for p in range({first_client_port}, {first_client_port + count}):\n"
              "    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(5)\n"
              f"    s.bind(('{CLIENT}', p)); s.connect(('198.18.0.101', {port}))\n"
              "    seen.add(s.makefile().readline().strip()); s.close()\n"
              "print(' '.join(sorted(seen)))\n")
    return set(topo["cli"].run(sys.executable, "-c", script).stdout.split())


def store(topo, storescu: str, port: int, files: list[Path]) -> None:
    for path in files:
        done = topo["cli"].run(storescu, "-aet", "CT1", "-aec", "ANY-SCP", "198.18.0.100", str(port), str(path),
                               check=False)
        assert done.returncode == 0, done.stderr or done.stdout


def test_the_issue_example_runs_as_written(topology, tmp_path):
    storescu = need_tool("storescu")
    topo = topology("dr", balancer_prepared=False)
    stores = {}
    for node in topo.servers:
        stores[node.role] = tmp_path / node.role
        stores[node.role].mkdir()
        for port in (104, 11112):
            topo.start(node.role, [sys.executable, str(PEERS / "dicom_scp.py"), "--ae", "ANY-SCP", "--host", "0.0.0.0",
                                   "--port", str(port), "--store", str(stores[node.role])])
        for port in (12000, 12001):
            topo.start(node.role, [sys.executable, str(PEERS / "tcp_server.py"), "--name", node.role,
                                   "--host", "0.0.0.0", "--port", str(port)])
    config = yaml.safe_load(ISSUE_EXAMPLE.replace("lb0", "eth0").replace("198.18.0.21", topo["rs3"].address))
    medlb = MedlbNode(topo["lb"], tmp_path, config["services"]).start()
    medlb.wait_kernel("pacs-retrieve", {"pacs1", "pacs2"}, timeout=30)
    medlb.wait_kernel("vna-nat", {"vna1", "vna2"}, timeout=30)

    files = sample_files(8)  # eight different SOP instances: a file's name on a server is its UID
    store(topo, storescu, 104, files[0:2])
    store(topo, storescu, 11112, files[2:4])
    assert sum(len(list(stores[role].iterdir())) for role in ("rs1", "rs2")) == 4
    assert names(topo, 12000, 20, 45000) == {"rs1", "rs2"}
    assert names(topo, 12001, 20, 45100) == {"rs1", "rs2"}

    # The operator halts the primary PACS cluster: DICOM goes to the backup, the NAT
    # service (other servers' states) is untouched; failback waits for the operator.
    for name in ("pacs1", "pacs2"):
        medlb.set_state("pacs-retrieve", name, "halt")
    store(topo, storescu, 104, files[4:6])
    assert len(list(stores["rs3"].iterdir())) == 2, "the backup cluster did not take the associations"
    assert names(topo, 12000, 10, 45200) == {"rs1", "rs2"}
    for name in ("pacs1", "pacs2"):
        medlb.set_state("pacs-retrieve", name, "online")
    assert medlb.service("pacs-retrieve")["active_pool"] == "backup"
    medlb.api("POST", "/api/v1/services/pacs-retrieve/failback")
    medlb.wait_kernel("pacs-retrieve", {"pacs1", "pacs2"})
    store(topo, storescu, 11112, files[6:8])
    assert len(list(stores["rs3"].iterdir())) == 2, "new associations still go to the backup after failback"
