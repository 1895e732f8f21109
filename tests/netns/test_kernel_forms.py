"""The rendered DR and NAT rulesets forwarding real traffic between namespaces.

A client (curl, and a program holding connections open) calls the VIP; three real
servers (tests/peers: an HTTP server and a name-then-echo TCP server) answer. The
kernel's choice of server is predicted for every connection from its client port
(kernel.jhash + the Maglev table), so these tests check that the bucket the kernel
computes selects the table's entry, not only that traffic spreads.
"""

from __future__ import annotations


from l4_helpers import listen, ruleset, server, service, with_taking
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from topology import BALANCER, CLIENT, Topology
from traffic import (
    CLOSING_PORT,
    DOWNLOAD,
    HTTP_PORT,
    LINE_PORT,
    SIZE,
    Holder,
    curl,
    download_at_balancer,
    names_by_port,
    start_servers,
)

from medlb.kernel.jhash import bucket
from medlb.kernel.listing import counters, map_elements
from medlb.kernel.nft import Nft
from medlb.kernel.ruleset import (
    DR_TABLE,
    NAT_TABLE,
    pins_map,
    render_apply,
    render_update,
    traffic_counter,
)


def pool(topo: Topology, mode: str, taking: list[str] | None = None, **options):
    name = "pacs" if mode == "dr" else "vna"
    servers = [server(name, node.role, node.address, mac=node.mac if mode == "dr" else None) for node in topo.servers]
    return service(name, mode, [listen(topo.vip, HTTP_PORT, (LINE_PORT, CLOSING_PORT))], servers, taking=taking, size=SIZE,
                   interface="eth0", **options)


def expected(service_, client_port: int) -> str | None:
    table = service_.table
    return table.server_for(bucket(CLIENT, client_port, seed=table.seed, size=table.size))



def test_dr_spreads_new_flows_as_the_table_says_and_replies_bypass_the_balancer(topology):
    topo = topology("dr")
    start_servers(topo)
    pacs = pool(topo, "dr")
    nft = Nft(topo["lb"].netns)
    nft.apply(render_apply(ruleset(pacs, macs={"eth0": topo["lb"].mac})))

    chosen = {port: curl(topo, "/name", port) for port in range(41000, 41060)}
    assert chosen == {port: expected(pacs, port) for port in chosen}, "the kernel chose another server than the table"
    assert set(chosen.values()) == {"rs1", "rs2", "rs3"}

    received = download_at_balancer(topo, 41100, "DR")
    assert received < 0.05 * DOWNLOAD, "reply bytes crossed the balancer"

    listing = nft.list_table(*DR_TABLE)
    counts = counters(listing)
    new_flows = {node.role: counts[f"new_pacs/{node.role}"][0] for node in topo.servers}
    assert new_flows == {role: list(chosen.values()).count(role) + (expected(pacs, 41100) == role)
                         for role in new_flows}
    assert all(counts[traffic_counter("pacs", node.role)][1] > 0 for node in topo.servers)


def test_dr_pins_keep_established_flows_when_a_server_comes_back(topology):
    """rs3 rejoins the table: the held flows whose bucket moves to rs3 stay on their
    server (rs3 would reset them), while new connections from the same client ports
    follow the new table, also over an old connection's pin (the SYN clears it)."""
    topo = topology("dr")
    start_servers(topo)
    two = pool(topo, "dr", taking=["rs1", "rs2"])
    nft = Nft(topo["lb"].netns)
    macs = {"eth0": topo["lb"].mac}
    nft.apply(render_apply(ruleset(two, macs=macs)))
    held = Holder(topo, range(42000, 42030))
    assert held.servers == {port: expected(two, port) for port in held.servers}
    reused = range(42100, 42130)
    assert set(names_by_port(topo, reused).values()) <= {"rs1", "rs2"}

    three = with_taking(two, ["rs1", "rs2", "rs3"])
    nft.apply(render_update(two, three))
    moved = [port for port in held.servers if expected(three, port) != held.servers[port]]
    print(f"\nDR: rs3 back: {len(moved)} of {len(held.servers)} held flows are in buckets that moved to it")
    assert moved and all(expected(three, port) == "rs3" for port in moved)
    assert held.echo() == {port: "ok" for port in held.servers}, "an established flow lost its server"
    assert len(map_elements(nft.list_table(*DR_TABLE), pins_map(three))) >= len(held.servers)

    again = names_by_port(topo, reused)
    assert again == {port: expected(three, port) for port in reused}
    assert "rs3" in again.values()


def test_dr_full_apply_again_adopts_the_tables_keeping_pins_and_counters(topology):
    """What a restarted medlb does: the same full apply over the live tables."""
    topo = topology("dr")
    start_servers(topo)
    pacs = pool(topo, "dr")
    nft = Nft(topo["lb"].netns)
    text = render_apply(ruleset(pacs, macs={"eth0": topo["lb"].mac}))
    nft.apply(text)
    held = Holder(topo, range(43000, 43010))
    before = nft.list_table(*DR_TABLE)
    nft.apply(text)
    after = nft.list_table(*DR_TABLE)
    assert map_elements(after, pins_map(pacs)).keys() == map_elements(before, pins_map(pacs)).keys()
    assert len(map_elements(after, pins_map(pacs))) == 10
    for name, (packets, _) in counters(before).items():
        assert counters(after)[name][0] >= packets, f"counter {name} was reset"
    assert held.echo() == {port: "ok" for port in held.servers}


def peers_of(node, port: int) -> set[str]:
    """The remote addresses of a server's established connections on `port`."""
    out = node.run("ss", "-Htn", "state", "established", f"( sport = :{port} )").stdout
    return {line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def test_nat_with_source_nat_spreads_and_keeps_established_flows_over_a_map_change(topology):
    topo = topology("flat", vip="198.18.0.101")
    start_servers(topo)
    vna = pool(topo, "nat", source_nat=True)
    nft = Nft(topo["lb"].netns)
    nft.apply(render_apply(ruleset(vna)))
    chosen = names_by_port(topo, range(44000, 44060))
    assert chosen == {port: expected(vna, port) for port in chosen}
    assert set(chosen.values()) == {"rs1", "rs2", "rs3"}

    held = Holder(topo, range(44100, 44130))
    assert held.servers == {port: expected(vna, port) for port in held.servers}
    for node in topo.servers:
        if node.role in held.servers.values():
            assert peers_of(node, LINE_PORT) == {BALANCER}, "the server saw the client, not the balancer"

    only_rs3 = with_taking(vna, ["rs3"])
    nft.apply(render_update(vna, only_rs3))
    assert held.echo() == {port: "ok" for port in held.servers}, "conntrack lost an established flow"
    assert set(names_by_port(topo, range(44200, 44210)).values()) == {"rs3"}
    counts = counters(nft.list_table(*NAT_TABLE))
    assert sum(counts[f"new_vna/{node.role}"][0] for node in topo.servers) == 60 + 30 + 10


def test_nat_without_source_nat_behind_the_balancer_shows_servers_the_client(topology):
    topo = topology("nat-behind", vip="198.18.0.101")
    start_servers(topo)
    vna = pool(topo, "nat")
    Nft(topo["lb"].netns).apply(render_apply(ruleset(vna)))
    chosen = names_by_port(topo, range(45000, 45030))
    assert chosen == {port: expected(vna, port) for port in chosen}
    held = Holder(topo, range(45100, 45106))
    for node in topo.servers:
        if node.role in held.servers.values():
            assert peers_of(node, LINE_PORT) == {CLIENT}
