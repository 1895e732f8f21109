"""Operating the clustered pair in network namespaces, on test_ha_pair's topology and
helpers: the active node's interface going down, `preempt: false` with `takeover`,
`release`, and a split brain healing. Failover times are printed, never asserted.
"""

from __future__ import annotations

import signal
import sys
import time

from medlb_node import TOKEN, MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from test_ha_pair import SERVICE, VIP, fail_over, holders, name_of, pair, reaches, elect_pair, wait_role  # noqa: F401 (pair: a fixture)
from topology import Topology
from traffic import HTTP_PORT, LINE_PORT, curl


def ctl(node: MedlbNode, *args: str, check: bool = True) -> str:
    """`medlb ctl` inside the node's namespace, over HTTP or HTTPS as its admin section says."""
    plain = node.config["admin"].get("tls") == "off"
    url = ["--url", "http://127.0.0.1:9443"] if plain else ["--insecure", "--url", "https://127.0.0.1:9443"]
    done = node.node.run("env", f"MEDLB_TOKEN={TOKEN}", sys.executable, "-m", "medlb", "ctl", *url, *args,
                         check=check, timeout=60)
    return done.stdout + done.stderr


def split_brain(topo: Topology, active: MedlbNode, passive: MedlbNode) -> None:
    """VRRP (IP protocol 112) dropped both ways inside the active node's namespace (the
    sync channel, HTTPS, still passes), until both nodes hold the VIP and are MASTER."""
    active.node.run("nft", "-f", "-", input=(
        "table inet medlbtest_vrrp {\n"
        " chain in { type filter hook input priority -300; ip protocol 112 drop; }\n"
        " chain out { type filter hook output priority -300; ip protocol 112 drop; }\n}\n"))
    deadline = time.monotonic() + 20
    while sorted(holders(topo)) != ["lb-a", "lb-b"]:
        assert time.monotonic() < deadline, f"the VIP is on {holders(topo)}, not on both"
        time.sleep(0.05)
    wait_role(passive, "MASTER")
    wait_role(active, "MASTER")


def heal_vrrp(node: MedlbNode) -> None:
    node.node.run("nft", "delete", "table", "inet", "medlbtest_vrrp")


def test_an_interface_going_down_moves_the_vip_and_clients_follow(pair):
    topo, nodes = pair
    active, passive = elect_pair(topo, nodes, see_peers=False)
    active.node.run("ip", "link", "set", "eth0", "down")
    took = fail_over(topo, name_of(passive), range(24001, 25000))
    print(f"\n{name_of(active)}'s eth0 down: {name_of(passive)} holds the VIP and serves after {took:.2f} s")
    wait_role(passive, "MASTER")


def test_with_preempt_off_the_returning_node_stays_passive_until_takeover_and_release_hands_back(pair):
    topo, nodes = pair
    active, passive = elect_pair(topo, nodes, see_peers=False)
    first, second = name_of(active), name_of(passive)

    # Refused, nothing changed: release on the passive node, takeover on the active one.
    status, answer = passive.api("POST", "/api/v1/ha/release", check=False)
    assert status == 409 and "not active" in answer["error"], answer
    status, answer = active.api("POST", "/api/v1/ha/takeover", check=False)
    assert status == 409 and "already active" in answer["error"], answer
    assert "add --yes" in ctl(passive, "ha", "takeover", check=False)
    assert holders(topo) == [first]

    # The active node is stopped and comes back: it does not take the VIP back.
    active.stop()
    fail_over(topo, second, range(25001, 26000))
    active.start()
    wait_role(active, "BACKUP")
    time.sleep(1.5)  # several advert intervals: a preempting node would have taken it by now
    assert holders(topo) == [second]

    # takeover: the returned node becomes active, the other passive, and stays so.
    started = time.monotonic()
    out = ctl(active, "ha", "takeover", "--yes")
    took = time.monotonic() - started
    print(f"\ntakeover on {first}: {took:.2f} s\n{out}")
    assert "ha takeover: this node holds the VIPs" in out, out
    fail_over(topo, first, range(26001, 27000))
    wait_role(passive, "BACKUP")
    time.sleep(1.5)
    assert holders(topo) == [first] and "nopreempt" in (active.workdir / "state" / "ha" / "keepalived.conf").read_text()

    # release: the VIP moves to the peer and this node stays passive.
    started = time.monotonic()
    out = ctl(active, "ha", "release", "--yes")
    print(f"release on {first}: {time.monotonic() - started:.2f} s\n{out}")
    assert f"ha release: {second} holds the VIPs; this node is BACKUP" in out, out
    assert holders(topo) == [second] and reaches(topo, 27001) is not None
    time.sleep(1.5)
    assert holders(topo) == [second]
    audit = active.api("GET", "/api/v1/audit?q=ha_")[1]
    actions = [entry["action"] for entry in audit]
    assert "ha_release" in actions and "ha_takeover" in actions, actions
    release = next(entry for entry in audit if entry["action"] == "ha_release")
    assert release["who"] and release["source"] == "127.0.0.1", release
    assert release["text"] == f"Released the VIPs to the peer on node {first} (it was MASTER)"
    for node in (active, passive):  # no split brain was seen in any of it
        assert node.api("GET", "/api/v1/ha")[1]["split_brain"] is None


def recorded_split_brain(name: str, node: MedlbNode, timeout: float = 10) -> tuple[dict, dict]:
    """The node's last split brain as GET /api/v1/ha shows it, and its one audit entry
    (whose detail is the same episode)."""
    deadline = time.monotonic() + timeout
    while not (episode := node.api("GET", "/api/v1/ha")[1]["split_brain"]):
        assert time.monotonic() < deadline, f"{name} shows no split brain:\n{node.log()[-3000:]}"
        time.sleep(0.1)
    audit = node.api("GET", "/api/v1/audit?q=ha_split_brain")[1]
    [entry] = [entry for entry in audit if entry["action"] == "ha_split_brain"]
    assert entry["detail"] == episode, entry
    return episode, entry


def test_a_split_brain_heals_to_one_active_node_and_both_audit_the_episode(pair):
    topo, nodes = pair
    active, passive = elect_pair(topo, nodes, see_peers=False)
    split_brain(topo, active, passive)
    time.sleep(1)  # both active for a while
    heal_vrrp(active)
    healed = time.monotonic()
    while len(holders(topo)) != 1:
        assert time.monotonic() - healed < 20, f"the VIP is on {holders(topo)} after the heal"
        time.sleep(0.05)
    [winner] = holders(topo)
    print(f"\nsplit brain healed: {winner} alone holds the VIP after {time.monotonic() - healed:.2f} s")
    assert winner == "lb-a"  # the higher priority keeps the VIPs, preempt or not
    time.sleep(1)
    assert holders(topo) == ["lb-a"]
    episodes = {}
    for name, node in nodes.items():
        episode, entry = recorded_split_brain(name, node)
        assert entry["text"].startswith("Split brain: both nodes active for "), entry
        episodes[name] = episode
        print(f"{name}: {episode}")
    assert episodes["lb-a"]["kept_vips"] is True and episodes["lb-b"]["kept_vips"] is False
    # Only VRRP was dropped: lb-a saw lb-b's gratuitous ARPs, so both know the start,
    # and both saw the same episode (the clocks are the host's).
    assert episodes["lb-a"]["start_known"] is True and episodes["lb-b"]["start_known"] is True
    a, b = episodes["lb-a"], episodes["lb-b"]
    assert a["start"] <= b["end"] and b["start"] <= a["end"] and b["duration"] > 0
    assert "last split brain: " in ctl(nodes["lb-b"], "ha", "status")


def test_a_layer_7_and_an_l4_dr_service_keep_working_through_a_failover_and_a_dr_transfer_completes(pair):
    topo, nodes = pair
    topo.make_dr_servers()
    dr = {"name": "pacs", "mode": "l4-dr", "listen": [f"{VIP}:{HTTP_PORT}"], "scheduler": "maglev",
          "l4": {"interface": "eth0", "manage_vip": False},  # keepalived moves the VIP
          "health": {"type": "tcp", "port": LINE_PORT, "interval": "300ms", "timeout": "300ms"},
          "servers": [{"name": node.role, "address": node.address} for node in topo.servers]}
    nodes["lb-a"].write_config([SERVICE, dr])  # the one file both nodes run
    active, passive = elect_pair(topo, nodes, see_peers=False)
    every = {"rs1", "rs2", "rs3"}
    for node in (active, passive):
        node.wait_kernel("pacs", every)
    tables = [(view["seed"], view["table_size"]) for view in (active.l4("pacs"), passive.l4("pacs"))]
    assert tables[0] == tables[1], f"the two nodes' Maglev tables differ: {tables}"

    # A DR download held at 3 MB/s by the client runs while the active medlb is killed;
    # the client's small receive buffer keeps its ACKs flowing to the balancer to the end.
    topo["cli"].sysctl(net__ipv4__tcp_rmem="4096 65536 131072")
    size = 24 * 2**20
    download = topo.start("cli", ["curl", "-sS", "--max-time", "60", "--limit-rate", "3M", "--local-port", "28001",
                                  "-o", "/dev/null", "-w", "%{size_download}",
                                  f"http://{VIP}:{HTTP_PORT}/download/{size}"], ready=None)
    time.sleep(1.5)
    assert download.poll() is None, "the download ended before the failover"
    active.stop(signal.SIGKILL)
    took = fail_over(topo, name_of(passive), range(28002, 29000))
    print(f"\n{name_of(active)} killed mid-download: {name_of(passive)} holds the VIP and serves layer 7 "
          f"after {took:.2f} s")
    assert download.poll() is None, "the download ended during the failover"
    # The old node leaves the segment (its kernel rules outlive medlb -9 and would
    # otherwise still forward packets sent to its MAC): the new one carries the rest.
    active.node.run("ip", "link", "set", "eth0", "down")
    before = sum(server["packets"] for server in passive.l4("pacs")["servers"])
    out, err = download.communicate(timeout=90)
    assert download.returncode == 0 and int(out) == size, f"the DR transfer broke: {download.returncode} {out} {err}"
    carried = sum(server["packets"] for server in passive.l4("pacs")["servers"]) - before
    print(f"the DR transfer completed; {name_of(passive)} forwarded {carried} of its packets after the failover")
    assert carried > 0
    assert {curl(topo, "/name", port).strip() for port in range(29001, 29013)} <= every  # new DR flows
    assert reaches(topo, 29100) in every


def test_the_node_that_kept_the_vips_records_a_split_brain_it_heard_nothing_of(pair):
    """lb-b's reign is hidden from lb-a: its gratuitous ARPs and its answers for the VIP
    are dropped at the switch, and lb-a hears none of its adverts, while lb-b hears
    lb-a's at the heal and yields. lb-a saw nothing of the episode; lb-b, which gave
    the VIPs up, saw it surely and tells it over the sync channel, so both pages and
    both audits have it. (Before, lb-a showed no split brain: the page test's flake.)"""
    topo, nodes = pair
    active, passive = elect_pair(topo, nodes, see_peers=False)
    topo["sw"].run("nft", "-f", "-", input=(
        "table bridge medlbtest_arp {\n"
        f' chain vip_arp {{ type filter hook forward priority -300; iifname "p-lb2" arp saddr ip {VIP} drop; }}\n}}\n'))
    try:
        split_brain(topo, active, passive)
        time.sleep(1)  # both active for a while
        heal_vrrp(active)
        nodes["lb-a"].node.run("nft", "-f", "-", input=(  # lb-a still hears nothing from lb-b
            "table inet medlbtest_vrrp {\n chain in { type filter hook input priority -300; ip protocol 112 drop; }\n}\n"))
        wait_role(nodes["lb-b"], "BACKUP")
        assert holders(topo) == ["lb-a"]
        episodes = {}
        for name, node in nodes.items():
            episode, entry = recorded_split_brain(name, node)
            episodes[name] = (episode, entry["text"])
            print(f"{name}: {entry['text']}")
        (a, a_text), (b, _) = episodes["lb-a"], episodes["lb-b"]
        assert b["kept_vips"] is False and b["told_by_peer"] is False and b["start_known"] is True
        assert a["kept_vips"] is True and a["told_by_peer"] is True and a_text.endswith("kept the VIPs (as the peer saw it)")
        assert (a["start"], a["end"], a["duration"]) == (b["start"], b["end"], b["duration"]) and a["duration"] > 0
    finally:
        topo["sw"].run("nft", "delete", "table", "bridge", "medlbtest_arp", check=False)
        nodes["lb-a"].node.run("nft", "delete", "table", "inet", "medlbtest_vrrp", check=False)
