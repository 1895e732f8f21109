"""Two real keepalived processes on the rendered configuration (medlb.ha.keepalived),
one in each balancer namespace of the `pair` topology: they elect one holder of the
VIP, a failing track script and a stopped keepalived each move the VIP to the other
node, and role changes arrive on the notify FIFO. Failover times are printed, never
asserted (the machine is shared). medlb does not run the pair yet; these tests pin
what its rendering makes keepalived do.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import need_tool
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from topology import BALANCER, BALANCER2, Topology

from medlb.config import parse_config
from medlb.ha import keepalived

VIP = "198.18.0.100"
PAIR = f"""\
admin: {{listen: "0.0.0.0:9443", token_file: token}}
ha:
  nodes:
    - {{name: lb-a, address: "{BALANCER}", priority: 150}}
    - {{name: lb-b, address: "{BALANCER2}", priority: 100}}
  interface: eth0
  virtual_router_id: 51
  advert_interval: 200ms
  vips: ["{VIP}/24"]
  sync_token_file: ha-token
"""
ROLES = {"lb-a": "lb", "lb-b": "lb2"}


class Node:
    """One node's keepalived, its alive file (the track script passes while it exists)
    and the role changes read from its notify FIFO."""

    def __init__(self, topo: Topology, name: str, state_dir: Path):
        self.name, self.role, self.topo = name, ROLES[name], topo
        ha = parse_config(PAIR).config.ha
        assert ha is not None
        self.files = keepalived.NodeFiles.under(state_dir)
        self.files.directory.mkdir(parents=True)
        self.alive = self.files.directory / "alive"
        self.alive.touch()
        self.files.config.write_text(keepalived.render(ha, name, self.files,
                                                       [need_tool("test"), "-e", str(self.alive)]))
        os.mkfifo(self.files.notify_fifo)
        self.events: list[str] = []
        self.process = topo.start(self.role, keepalived.argv(self.files, need_tool("keepalived")), ready=None)
        threading.Thread(target=self._read_fifo, daemon=True).start()

    def _read_fifo(self) -> None:
        with open(self.files.notify_fifo, encoding="utf-8") as fifo:
            for line in fifo:
                self.events.append(line.strip())

    def holds_vip(self) -> bool:
        shown = json.loads(self.topo[self.role].run("ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
        return any(info["local"] == VIP for link in shown for info in link.get("addr_info", []))

    def wait_event(self, state: str, timeout: float = 15) -> None:
        wanted = f'INSTANCE "{keepalived.VRRP_INSTANCE}" {state}'
        deadline = time.monotonic() + timeout
        while not any(event.startswith(wanted) for event in self.events):
            assert self.process.poll() is None, f"keepalived of {self.name} exited: {self.stderr()}"
            assert time.monotonic() < deadline, f"{self.name} never reported {state}; events {self.events}"
            time.sleep(0.05)

    def stderr(self) -> str:
        return self.process.stderr.read() if self.process.stderr and self.process.poll() is not None else ""


def holders(nodes: list[Node]) -> list[str]:
    return [node.name for node in nodes if node.holds_vip()]


def wait_for_holder(nodes: list[Node], name: str, timeout: float = 15) -> float:
    """Seconds until `name` alone holds the VIP (polled every 20 ms)."""
    start = time.monotonic()
    while holders(nodes) != [name]:
        assert time.monotonic() - start < timeout, f"the VIP is on {holders(nodes)}, not {name} alone"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def pair(topology, tmp_path):  # noqa: F811 (the fixture imported above)
    need_tool("keepalived")
    topo = topology("pair")
    nodes = [Node(topo, name, tmp_path / name) for name in ROLES]
    yield nodes
    for node in nodes:  # the topology kills what is left; SIGTERM first lets keepalived remove its VIP
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
            node.process.wait(timeout=10)


def test_one_node_holds_the_vip_and_a_failing_check_or_a_stopped_keepalived_moves_it(pair):
    a, b = pair

    # Both start BACKUP with nopreempt; the election leaves exactly one holder.
    deadline = time.monotonic() + 15
    while len(holders(pair)) != 1:
        assert time.monotonic() < deadline, f"no single holder of the VIP: {holders(pair)}"
        time.sleep(0.05)
    time.sleep(1)  # a few advert intervals: still one holder, not two
    [first] = holders(pair)
    active, passive = (a, b) if first == "lb-a" else (b, a)
    active.wait_event("MASTER")
    passive.wait_event("BACKUP")
    print(f"\nelected: {active.name} holds {VIP}")

    # The active node's track script fails: it goes to FAULT and the other takes over.
    active.alive.unlink()
    took = wait_for_holder(pair, passive.name)
    active.wait_event("FAULT")
    passive.wait_event("MASTER")
    print(f"track script failed on {active.name}: {passive.name} holds the VIP after {took:.2f} s")

    # The old node recovers (BACKUP: nopreempt keeps the VIP where it is), then the
    # holder's keepalived stops: the VIP moves back.
    active.events.clear()
    active.alive.touch()
    active.wait_event("BACKUP")
    assert holders(pair) == [passive.name]
    passive.process.send_signal(signal.SIGTERM)
    took = wait_for_holder(pair, active.name)
    passive.process.wait(timeout=10)
    print(f"keepalived of {passive.name} stopped: {active.name} holds the VIP after {took:.2f} s")
