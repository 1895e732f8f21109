"""Operator decisions across the clustered pair, with real medlb nodes in namespaces (the
pair of test_ha_pair.py): a halt made on the active node is in force on the passive one
(printed: how long it took) and after the active is killed with -9; a failover latch the
active node's health checks set travels, and holds after the failover; a passive node
that was down during a halt takes it when it returns; the peer audits what it took as
coming from the peer.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from conftest import need_tool
from medlb_node import MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from test_ha_pair import SERVICE, VIP, fail_over, holders, name_of, pair, elect_pair, wait_peer, wait_role  # noqa: F401
from topology import Topology
from traffic import CLOSING_PORT, NAMES

#: A service with a backup cluster and failback: manual, on the VIP too.
PACS_PORT = 7002
PACS = {"name": "pacs", "mode": "tcp", "listen": f"{VIP}:{PACS_PORT}", "failback": "manual",
        # A timeout generous for a loaded host: a check lost at a node's start would latch it.
        "health": {"type": "tcp", "interval": "1s", "timeout": "1s", "rise": 1, "fall": 1},
        "servers": [{"name": "rs1", "address": f"198.18.0.11:{CLOSING_PORT}"}],
        "backup": [{"name": "rs3", "address": f"198.18.0.13:{CLOSING_PORT}"}]}


def names_through(topo: Topology, port: int, first_client_port: int, count: int = 30) -> list[str]:
    """The server each of `count` new connections to VIP:port reaches."""
    done = topo["cli"].run(need_tool("timeout"), "20", sys.executable, str(NAMES), "--to", f"{VIP}:{port}",
                           "--ports", f"{first_client_port}-{first_client_port + count - 1}")
    return list(json.loads(done.stdout).values())


def wait_for(what: str, check, timeout: float = 10) -> float:
    """Poll `check()` until true; the seconds it took (printed by the caller, never asserted)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def decisions_in_sync(node: MedlbNode) -> bool:
    return node.api("GET", "/api/v1/ha")[1]["peer"].get("decisions_in_sync") is True


def test_a_halt_on_the_active_node_is_in_force_on_the_passive_one_and_after_the_active_dies(pair):
    topo, nodes = pair
    active, passive = elect_pair(topo, nodes)
    wait_for("decisions in sync", lambda: decisions_in_sync(active) and decisions_in_sync(passive))

    active.set_state("hl7-feed", "rs1", "halt")
    took = wait_for("rs1 halted on the passive node",
                    lambda: passive.server("hl7-feed", "rs1")["state"] == "halt")
    print(f"\na halt on {name_of(active)} is in force on {name_of(passive)} after {took:.3f} s (API polled)")
    assert passive.server("hl7-feed", "rs2")["state"] == "online"
    wait_for("decisions in sync again", lambda: decisions_in_sync(active) and decisions_in_sync(passive))
    metrics = passive.api("GET", "/metrics")[1]
    assert f'medlb_ha_decisions_in_sync{{node="{name_of(passive)}",peer="{name_of(active)}"}} 1.0' in metrics

    # The peer audits it as coming from the peer, naming the operator who made it.
    [made] = [entry for entry in active.api("GET", "/api/v1/audit?q=set_state")[1]
              if entry["target"] == "hl7-feed/rs1"]
    taken = [entry for entry in passive.api("GET", "/api/v1/audit?q=set_state")[1]
             if entry["target"] == "hl7-feed/rs1"]
    assert [(entry["who"], entry["detail"]["to"], entry["detail"]["by"]) for entry in taken] == [
        (f"peer:{name_of(active)}", "halt", made["who"])], taken

    # The active node dies: the new active routes around the halted server.
    active.stop(signal.SIGKILL)
    took = fail_over(topo, name_of(passive), range(21001, 22000))
    print(f"{name_of(active)} killed with -9: {name_of(passive)} serves after {took:.2f} s")
    reached = names_through(topo, CLOSING_PORT, 23000)
    assert "rs1" not in reached and set(reached) <= {"rs2", "rs3"} and reached, reached

    # Back online on the new active: the restarted node takes that before it serves.
    passive.set_state("hl7-feed", "rs1", "online")
    active.start()
    wait_role(active, "BACKUP")
    took = wait_for("rs1 online on the restarted node", lambda: active.server("hl7-feed", "rs1")["state"] == "online")
    print(f"the restarted {name_of(active)} has rs1 online {took:.3f} s after it answered as BACKUP")


def test_a_failover_latch_set_on_the_active_node_travels_and_holds_after_a_failover(pair):
    topo, nodes = pair
    for node in nodes.values():
        node.write_config([SERVICE, PACS])
    active, passive = elect_pair(topo, nodes)
    for node in (active, passive):
        node.wait_health("pacs", {"rs1": "up", "rs3": "up"})

    # Only the active node loses rs1 (its own health checks): it goes to the backup and
    # latches there. The passive node still sees rs1 up; the latch reaches it anyway.
    table = "medlb_test_block"
    active.node.run("nft", f"add table inet {table}")
    active.node.run("nft", f"add chain inet {table} out {{ type filter hook output priority 0 ; }}")
    active.node.run("nft", f"add rule inet {table} out ip daddr 198.18.0.11 tcp dport {CLOSING_PORT} drop")
    wait_for("the active node on the backup", lambda: active.service("pacs")["active_pool"] == "backup")
    active.node.run("nft", f"delete table inet {table}")
    active.wait_health("pacs", {"rs1": "up"})
    assert active.service("pacs")["failed_over"] is True  # failback: manual holds it on the backup
    took = wait_for("the latch on the passive node", lambda: passive.service("pacs")["failed_over"] is True)
    print(f"\nthe latch set on {name_of(active)} is on {name_of(passive)} after {took:.3f} s")
    assert passive.server("pacs", "rs1")["health"] == "up" and passive.service("pacs")["active_pool"] == "backup"
    audit = passive.api("GET", "/api/v1/audit?q=failover_latch")[1]
    assert [(entry["who"], entry["target"], entry["detail"]["to"]) for entry in audit] == [
        (f"peer:{name_of(active)}", "pacs/default", "true")], audit

    # The active dies: the new one stays on the backup until an operator fails back.
    active.stop(signal.SIGKILL)
    fail_over(topo, name_of(passive), range(21001, 22000))
    assert set(names_through(topo, PACS_PORT, 23000)) == {"rs3"}
    passive.api("POST", "/api/v1/services/pacs/failback", {})
    assert set(names_through(topo, PACS_PORT, 23100)) == {"rs1"}

    # The failback travels too: the old active, back, leaves its backup.
    active.start()
    wait_role(active, "BACKUP")
    took = wait_for("the failback on the restarted node", lambda: active.service("pacs")["failed_over"] is False)
    print(f"the failback made on {name_of(passive)} is on the restarted {name_of(active)} after {took:.3f} s")
    assert active.service("pacs")["active_pool"] == "primary"
    audit = active.api("GET", "/api/v1/audit?q=failover_latch")[1]
    assert (f"peer:{name_of(passive)}", "pacs/default", "false") in [
        (entry["who"], entry["target"], entry["detail"]["to"]) for entry in audit], audit


def test_a_passive_node_down_during_a_halt_takes_it_when_it_returns(pair):
    topo, nodes = pair
    active, passive = elect_pair(topo, nodes)

    passive.stop(signal.SIGTERM)
    started = time.monotonic()
    active.set_state("hl7-feed", "rs2", "drain")  # answered without waiting for the peer
    active.set_state("hl7-feed", "rs3", "halt")
    print(f"\ntwo decisions answered in {time.monotonic() - started:.3f} s with the peer down")
    view = wait_peer(active, up=False, in_sync=None)
    assert view["peer"]["decisions_in_sync"] is False

    passive.start()
    took = wait_for("the decisions on the returning node",
                    lambda: (passive.server("hl7-feed", "rs2")["state"], passive.server("hl7-feed", "rs3")["state"])
                    == ("drain", "halt"), timeout=20)
    print(f"the returning {name_of(passive)} has both decisions {took:.3f} s after it answered")
    wait_role(passive, "BACKUP")
    wait_for("decisions in sync", lambda: decisions_in_sync(active) and decisions_in_sync(passive), timeout=20)
    assert "ha_decisions_taken" in passive.log()
    assert holders(topo) == [name_of(active)]
