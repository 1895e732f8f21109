"""Source-IP persistence across the clustered pair, with real medlb nodes in namespaces
(the pair of test_ha_pair.py, two workers each): a client the active node placed on a
server goes back to that server through the VIP after the active node is killed with
-9, although the new active node's own scheduler would place it elsewhere.
"""

from __future__ import annotations

import signal
import time

from medlb_node import MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from test_ha_pair_decisions import names_through, wait_for
from test_ha_pair import SERVICE, SYNC_TOKEN, VIP, fail_over, name_of, pair, elect_pair  # noqa: F401 (pair: a fixture)
from traffic import CLOSING_PORT

VIEWER_PORT = 7003
VIEWER = {"name": "viewer", "mode": "tcp", "listen": f"{VIP}:{VIEWER_PORT}", "persistence": "source-ip",
          "servers": [{"name": role, "address": f"198.18.0.{host}:{CLOSING_PORT}"}
                      for role, host in (("rs1", 11), ("rs2", 12), ("rs3", 13))]}


def persistence_sync(node: MedlbNode) -> dict:
    return node.api("GET", "/api/v1/ha")[1]["persistence_sync"]


def test_a_client_returns_to_its_server_after_the_active_node_is_killed(pair):
    topo, nodes = pair
    for node in nodes.values():
        node.config["ha"] = {**node.config["ha"], "persistence_sync_interval": "500ms"}
        node.write_config([SERVICE, VIEWER])
    active, passive = elect_pair(topo, nodes)

    # The client is placed on rs3, where a fresh round robin would not put it first:
    # rs1 and rs2 are halted while it connects, then put back.
    for server in ("rs1", "rs2"):
        active.set_state("viewer", server, "halt")
    assert set(names_through(topo, VIEWER_PORT, 24000, count=5)) == {"rs3"}
    for server in ("rs1", "rs2"):
        active.set_state("viewer", server, "online")
    wait_for("rs1 and rs2 online on the passive node",
             lambda: {passive.server("viewer", s)["state"] for s in ("rs1", "rs2")} == {"online"})
    assert set(names_through(topo, VIEWER_PORT, 24100, count=5)) == {"rs3"}

    since = time.time()
    took = wait_for("the client's entry on the passive node",
                    lambda: (persistence_sync(passive)["taken_at"] or 0) > since
                    and persistence_sync(passive)["taken"] >= 1)
    sent = persistence_sync(active)
    assert sent["error"] is None and sent["sent"] >= 1 and sent["interval"] == 0.5
    # The active node keeps its own clients' entries; a malformed push changes nothing.
    other = {"viewer": [["c0000201", "rs1", 300]]}
    status, answer = active.api("POST", "/api/v1/ha/sync/persistence", {"node": "x", "tables": other},
                                check=False, token=SYNC_TOKEN)
    assert status == 409 and "is active" in answer["error"], answer
    status, answer = passive.api("POST", "/api/v1/ha/sync/persistence", {"node": "x", "tables": {"viewer": "x"}},
                                 check=False, token=SYNC_TOKEN)
    assert status == 400 and "not a set of persistence entries" in answer["error"], answer
    print(f"\nthe entry reached {name_of(passive)} {took:.2f} s after the client's last connection (polled)")

    active.stop(signal.SIGKILL)
    took = fail_over(topo, name_of(passive), range(21001, 22000))
    print(f"{name_of(active)} killed with -9: {name_of(passive)} serves after {took:.2f} s")
    assert set(names_through(topo, VIEWER_PORT, 24200, count=5)) == {"rs3"}
