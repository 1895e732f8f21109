"""`l4-nat` services run by a real medlb inside the balancer's namespace.

With `source_nat` the servers share the client's segment and see the balancer's
address; without it they sit on a second segment behind the balancer, their default
route pointing at it, and see the client's own address. Conntrack keeps every
established connection on its server whatever the maps become.
"""

from __future__ import annotations

import json

import pytest
from medlb_node import MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from topology import BALANCER, CLIENT
from traffic import (
    CLOSING_PORT,
    DOWNLOAD,
    HTTP_PORT,
    LINE_PORT,
    Holder,
    curl,
    download_at_balancer,
    fail_over_and_back_by_hand,
    names_by_port,
    start_servers,
)

HEALTH = {"type": "tcp", "port": LINE_PORT, "interval": "300ms", "timeout": "300ms", "fall": 2, "rise": 2}
ALL = {"rs1", "rs2", "rs3"}


def nat_service(topo, *, source_nat: bool, servers: list[str] | None = None, **extra) -> dict:
    return {"name": "vna", "mode": "l4-nat",
            "listen": [f"{topo.vip}:{HTTP_PORT}", f"{topo.vip}:{LINE_PORT}-{CLOSING_PORT}"],
            "scheduler": "maglev", "l4": {"interface": "eth0", "source_nat": source_nat}, "health": HEALTH,
            "servers": [{"name": node.role, "address": node.address} for node in topo.servers
                        if servers is None or node.role in servers],
            **extra}


def started(topo, tmp_path, services: list[dict], taking: set[str] = ALL) -> MedlbNode:
    start_servers(topo)
    medlb = MedlbNode(topo["lb"], tmp_path, services).start()
    medlb.wait_kernel("vna", taking)
    return medlb


@pytest.mark.parametrize("variant,source_nat", [("flat", True), ("nat-behind", False)])
def test_nat_spreads_and_the_servers_see_who_source_nat_says(topology, tmp_path, variant, source_nat):
    topo = topology(variant, balancer_prepared=False)
    medlb = started(topo, tmp_path, [nat_service(topo, source_nat=source_nat)])
    forward = topo["lb"].run("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
    assert forward == "1", "medlb did not turn IPv4 forwarding on for NAT"
    assert "ip_forward_enabled" in medlb.log()

    answers = names_by_port(topo, range(44000, 44060))
    assert set(answers.values()) == ALL
    seen = json.loads(curl(topo, "/headers", 44100))["client"]
    assert seen == (BALANCER if source_nat else CLIENT), "the server saw the wrong client address"
    view = medlb.l4("vna")
    assert sum(server["new_flows"] for server in view["servers"]) >= 61

    # Both directions cross a NAT balancer; each is counted as what it is.
    download_at_balancer(topo, 44110, "NAT through medlb")  # nat-behind: the replies arrive on eth1
    servers = medlb.service("vna")["servers"]
    to_clients = sum(server["bytes_to_client"] for server in servers)
    to_servers = sum(server["bytes_to_server"] for server in servers)
    assert to_clients > DOWNLOAD and to_servers < 0.05 * DOWNLOAD, (to_servers, to_clients)


def test_nat_established_connections_survive_a_map_change_and_a_reload(topology, tmp_path):
    topo = topology("flat", balancer_prepared=False)
    medlb = started(topo, tmp_path, [nat_service(topo, source_nat=True, servers=["rs1", "rs2"])], {"rs1", "rs2"})
    holder = Holder(topo, range(44200, 44240))
    assert set(holder.servers.values()) == {"rs1", "rs2"}

    medlb.set_state("vna", "rs1", "drain")
    assert set(holder.echo().values()) == {"ok"}, "a map change broke established connections"
    assert set(names_by_port(topo, range(44300, 44330)).values()) == {"rs2"}
    medlb.set_state("vna", "rs1", "online")

    medlb.write_config([nat_service(topo, source_nat=True)])  # rs3 joins
    medlb.api("POST", "/api/v1/reload")
    medlb.wait_kernel("vna", ALL)
    assert set(holder.echo().values()) == {"ok"}, "a reload broke established connections"
    assert "rs3" in names_by_port(topo, range(44400, 44460)).values()


def test_nat_halt_with_on_halt_close_cuts_that_servers_connections_only(topology, tmp_path):
    topo = topology("flat", balancer_prepared=False)
    medlb = started(topo, tmp_path, [nat_service(topo, source_nat=True, on_halt="close")])
    holder = Holder(topo, range(44500, 44540))
    on_rs1 = {port for port, name in holder.servers.items() if name == "rs1"}
    assert on_rs1

    medlb.set_state("vna", "rs1", "halt")
    results = holder.echo()
    assert {results[port] for port in results if port not in on_rs1} == {"ok"}
    assert "ok" not in {results[port] for port in on_rs1}, "on_halt: close left rs1's connections running"
    assert "flows_cut" in medlb.log()


def test_nat_failover_to_the_backup_and_back(topology, tmp_path):
    topo = topology("flat", balancer_prepared=False)
    service = nat_service(topo, source_nat=True, servers=["rs1", "rs2"], failback="manual",
                          backup=[{"name": "rs3", "address": topo["rs3"].address}])
    medlb = started(topo, tmp_path, [service], {"rs1", "rs2"})
    fail_over_and_back_by_hand(topo, medlb, "vna", {"rs1", "rs2"}, "rs3", 44600)


def test_a_refused_reload_changes_nothing_in_the_kernel(topology, tmp_path):
    topo = topology("flat", balancer_prepared=False)
    medlb = started(topo, tmp_path, [nat_service(topo, source_nat=True)])
    before = topo["lb"].run("nft", "list", "table", "ip", "medlb_nat").stdout
    broken = nat_service(topo, source_nat=True, l4={"interface": "nosuch0", "source_nat": True})
    medlb.write_config([broken])
    status, body = medlb.api("POST", "/api/v1/reload", check=False)
    assert status == 422, body
    assert "nosuch0" in json.dumps(body)
    assert topo["lb"].run("nft", "list", "table", "ip", "medlb_nat").stdout == before
    assert set(names_by_port(topo, range(44700, 44730)).values()) == ALL

    # A reload that leaves the layer 4 services as they were sends nothing to the kernel.
    medlb.write_config([nat_service(topo, source_nat=True)])
    medlb.api("POST", "/api/v1/reload")
    assert "how=unchanged" in medlb.log()


def test_layer_7_and_layer_4_services_run_side_by_side(topology, tmp_path):
    topo = topology("flat", balancer_prepared=False)
    relay = {"name": "relay", "mode": "tcp", "listen": [f"{BALANCER}:9000"], "health": HEALTH,
             "servers": [{"name": node.role, "address": f"{node.address}:{LINE_PORT}"} for node in topo.servers]}
    medlb = started(topo, tmp_path, [nat_service(topo, source_nat=True), relay])
    answer = topo["cli"].run("python3", "-c", "import socket; s=socket.create_connection(('%s', 9000), 5); "
                                              "print(s.makefile().readline().strip())" % BALANCER).stdout.strip()
    assert answer in ALL, "the layer 7 relay beside the kernel service does not answer"
    assert set(names_by_port(topo, range(44800, 44830)).values()) == ALL
    status, _ = medlb.api("GET", "/api/v1/services/relay/l4", check=False)
    assert status == 404
