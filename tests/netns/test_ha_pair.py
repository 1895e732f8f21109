"""The clustered pair running for real: two medlb nodes (`medlb run --node --state-dir`,
one file), each starting its own keepalived, a tcp service on the VIP, real servers
behind, a client on the segment. Killing the active medlb with -9 moves the VIP (its
keepalived outlives it and the track script fails); the restarted medlb adopts its
keepalived and stays passive (nopreempt); SIGTERM of the active node moves the VIP
back; VIPs a killed keepalived left are removed when its medlb starts again; a
keepalived killed under a running medlb is started again. Both nodes run two workers,
whose socket groups bind the VIP with IP_FREEBIND. Failover times are printed, never
asserted (the machine is shared).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import need_tool
from medlb_node import TOKEN, MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from topology import BALANCER, BALANCER2, Topology
from traffic import CLOSING_PORT, NAMES, start_servers

VIP = "198.18.0.100"
SYNC_TOKEN = "a-shared-ha-sync-token-0123456789"
ROLES = {"lb-a": "lb", "lb-b": "lb2"}
SERVICE = {"name": "hl7-feed", "mode": "tcp", "listen": f"{VIP}:{CLOSING_PORT}", "health": {"type": "tcp"},
           "servers": [{"name": role, "address": f"198.18.0.{host}:{CLOSING_PORT}"}
                       for role, host in (("rs1", 11), ("rs2", 12), ("rs3", 13))]}
PAIR = {
    "admin": {"listen": "0.0.0.0:9443", "token": TOKEN, "tls": "auto"},  # the nodes sync over HTTPS
    "ha": {"nodes": [{"name": "lb-a", "address": BALANCER, "priority": 150},
                     {"name": "lb-b", "address": BALANCER2, "priority": 100}],
           "interface": "eth0", "virtual_router_id": 51, "advert_interval": "200ms", "vips": [f"{VIP}/24"],
           "sync_token_file": "ha-token"},
    "workers": 2,  # the workers' socket groups bind the VIP with IP_FREEBIND too
}


def holders(topo: Topology) -> list[str]:
    found = []
    for name, role in ROLES.items():
        shown = json.loads(topo[role].run("ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
        if any(info["local"] == VIP for link in shown for info in link.get("addr_info", [])):
            found.append(name)
    return found


def reaches(topo: Topology, client_port: int) -> str | None:
    """The server that answers one new connection to the VIP, or None."""
    done = topo["cli"].run(need_tool("timeout"), "3", sys.executable, str(NAMES), "--to", f"{VIP}:{CLOSING_PORT}",
                           "--ports", f"{client_port}-{client_port}", check=False)
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)[str(client_port)] or None


def fail_over(topo: Topology, to: str, ports: range, timeout: float = 20) -> float:
    """Seconds until `to` alone holds the VIP and a client that retries reaches a server."""
    start = time.monotonic()
    port = iter(ports)
    while holders(topo) != [to] or reaches(topo, next(port)) is None:
        assert time.monotonic() - start < timeout, f"the VIP is on {holders(topo)}, not {to} alone"
        time.sleep(0.05)
    return time.monotonic() - start


def keepalived_pids(topo: Topology, role: str) -> set[int]:
    """The keepalived processes running in a node's namespace (parent and VRRP child)."""
    found = set()
    for pid in topo[role].run("ip", "netns", "pids", topo[role].netns, check=False).stdout.split():
        pid_alive = Path(f"/proc/{pid}/cmdline")
        try:
            if pid_alive.read_bytes().split(b"\0")[0].endswith(b"keepalived"):
                found.add(int(pid))
        except OSError:
            continue
    return found


def role_of(node: MedlbNode) -> str:
    return node.api("GET", "/api/v1/ha")[1]["role"]


def wait_role(node: MedlbNode, role: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = node.api("GET", "/api/v1/ha")[1]
        if view["role"] == role:
            return view
        assert time.monotonic() < deadline, f"{view['node']} is {view['role']}, not {role}:\n{node.log()[-3000:]}"
        time.sleep(0.1)


def start_pair(topology, tmp_path, shared: bool):  # noqa: F811 (the fixture imported above)
    """Two nodes on one config text: one file both run (`shared`), or a byte-identical
    copy each (as two hosts have), so that one node's writes do not reach the other."""
    need_tool("keepalived")
    need_tool("curl")
    topo = topology("pair")
    start_servers(topo)
    nodes = {}
    for name, role in ROLES.items():
        workdir = tmp_path / name
        workdir.mkdir()
        # lb-a finds itself by the address its namespace has; lb-b is named.
        named = ("--node", name) if name == "lb-b" else ()
        node = MedlbNode(topo[role], workdir, [SERVICE], run_args=(*named, "--state-dir", str(workdir / "state")),
                         **PAIR)
        if shared:
            node.config_path = tmp_path / "medlb.yaml"
        (node.config_path.parent / "ha-token").write_text(SYNC_TOKEN + "\n")
        node.config = {**node.config, "state_dir": str(tmp_path / "unused")}  # --state-dir wins
        node.write_config()
        nodes[name] = node
    return topo, nodes


@pytest.fixture
def pair(topology, tmp_path):  # noqa: F811 (the fixture imported above)
    topo, nodes = start_pair(topology, tmp_path, shared=True)
    yield topo, nodes
    for node in nodes.values():  # SIGTERM: each stops its keepalived; the topology kills what is left
        node.stop(signal.SIGTERM)


@pytest.fixture
def pair_apart(topology, tmp_path):  # noqa: F811 (the fixture imported above)
    topo, nodes = start_pair(topology, tmp_path, shared=False)
    yield topo, nodes
    for node in nodes.values():
        node.stop(signal.SIGTERM)


def test_the_pair_fails_over_on_kill_9_adopts_keepalived_on_restart_and_moves_the_vip_on_sigterm(pair):
    topo, nodes = pair
    for node in nodes.values():
        node.start()

    # One holder, one passive node; both agree, and the service answers through the VIP.
    deadline = time.monotonic() + 20
    while len(holders(topo)) != 1:
        assert time.monotonic() < deadline, (f"no single holder of the VIP: {holders(topo)}\n"
                                             + "\n".join(node.log()[-2000:] for node in nodes.values()))
        time.sleep(0.05)
    [first] = holders(topo)
    active, passive = (nodes["lb-a"], nodes["lb-b"]) if first == "lb-a" else (nodes["lb-b"], nodes["lb-a"])
    view = wait_role(active, "MASTER")
    assert view["vips_held"] == [f"{VIP}/24"] and view["peer"]["name"] == name_of(passive)
    assert wait_role(passive, "BACKUP")["vips_held"] == []
    assert reaches(topo, 21000) in {"rs1", "rs2", "rs3"}
    metrics = active.api("GET", "/metrics")[1]
    assert f'medlb_ha_role{{node="{first}",role="MASTER"}} 1.0' in metrics
    status = active.node.run("env", f"MEDLB_TOKEN={TOKEN}", sys.executable, "-m", "medlb", "ctl", "--url",
                             "https://127.0.0.1:9443", "--insecure", "ha", "status").stdout
    assert f"node {first} (" in status and "): MASTER (active) since " in status, status
    assert f"held here: {VIP}/24" in status and "keepalived: pid " in status and ", running" in status, status
    print(f"\nelected: {first} holds {VIP}\n{status}")

    # kill -9 of the active medlb: its keepalived lives on, its track script fails,
    # and the passive node takes the VIP.
    killed_keepalived = active.api("GET", "/api/v1/ha")[1]["keepalived"]["pid"]
    active.stop(signal.SIGKILL)
    took = fail_over(topo, passive_name := name_of(passive), range(21001, 22000))
    print(f"medlb of {name_of(active)} killed with -9: {passive_name} holds the VIP and serves after {took:.2f} s")
    assert os.path.exists(f"/proc/{killed_keepalived}"), "keepalived must outlive a medlb killed with -9"
    wait_role(passive, "MASTER")

    # The killed node starts again: it adopts its keepalived (no second one) and stays
    # passive (nopreempt), while the VIP stays where it is.
    active.start()
    view = wait_role(active, "BACKUP")
    assert view["keepalived"]["pid"] == killed_keepalived and view["keepalived"]["adopted"] is True
    assert {pid for pid in keepalived_pids(topo, active.node.role)
            if pid != killed_keepalived and _parent(pid) != killed_keepalived} == set()
    assert holders(topo) == [passive_name]
    audit = passive.api("GET", "/api/v1/audit?q=ha_role")[1]
    assert any(entry["action"] == "ha_role" and entry["detail"].get("to") == "MASTER" for entry in audit), audit

    # SIGTERM of the active node: it gives the VIP up first, and the other takes it.
    passive_keepalived = passive.api("GET", "/api/v1/ha")[1]["keepalived"]["pid"]
    passive.proc.send_signal(signal.SIGTERM)
    took = fail_over(topo, name_of(active), range(22001, 23000))
    print(f"{passive_name} stopped with SIGTERM: {name_of(active)} holds the VIP and serves after {took:.2f} s")
    assert passive.stop(signal.SIGTERM, timeout=30) == 0
    assert not os.path.exists(f"/proc/{passive_keepalived}"), "SIGTERM stops the node's keepalived"
    assert wait_role(active, "MASTER")["vips_held"] == [f"{VIP}/24"]

    # The whole node dies at once (medlb and keepalived killed with -9): its VIP stays
    # on its interface while the peer takes it too. Started again, medlb removes the
    # leftover before it starts a new keepalived, and the node is passive.
    passive.start()
    wait_role(passive, "BACKUP")
    crashed = name_of(active)
    pids = keepalived_pids(topo, active.node.role)
    active.stop(signal.SIGKILL)
    for pid in sorted(pids, key=lambda pid: _parent(pid) not in pids):  # the VRRP child first: killed
        os.kill(pid, signal.SIGKILL)  # after its parent, it would leave cleanly, removing the VIP
    deadline = time.monotonic() + 20
    while sorted(holders(topo)) != ["lb-a", "lb-b"]:
        assert time.monotonic() < deadline, f"the VIP is on {holders(topo)}"
        time.sleep(0.05)
    active.start()  # answers once keepalived is started, after the leftover was removed
    assert holders(topo) == [passive_name]
    assert "ha_leftover_vips_removed" in active.log()
    view = wait_role(active, "BACKUP")
    assert view["keepalived"]["adopted"] is False and view["keepalived"]["pid"] not in pids
    assert holders(topo) == [passive_name]
    print(f"{crashed} crashed whole and came back: its leftover VIP removed, {passive_name} alone holds it")

    # keepalived alone dies under a running medlb: medlb starts it again.
    pids = keepalived_pids(topo, active.node.role)
    for pid in sorted(pids, key=lambda pid: _parent(pid) not in pids):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        keeper = active.api("GET", "/api/v1/ha")[1]["keepalived"]
        if keeper["restarts"] == 1 and keeper["running"]:
            break
        assert time.monotonic() < deadline, f"keepalived was not started again: {keeper}\n{active.log()[-3000:]}"
        time.sleep(0.1)
    assert keeper["pid"] not in pids and "keepalived_exited" in active.log()
    wait_role(active, "BACKUP")
    assert holders(topo) == [passive_name]


def name_of(node: MedlbNode) -> str:
    return next(name for name, role in ROLES.items() if role == node.node.role)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_peer(node: MedlbNode, up: bool = True, in_sync: bool | None = True, timeout: float = 20) -> dict:
    """Until the node's view of its peer is up (and its config in sync) or not; the view."""
    deadline = time.monotonic() + timeout
    while True:
        view = node.api("GET", "/api/v1/ha")[1]
        peer = view["peer"]
        if peer["up"] == up and (in_sync is None or peer["config_in_sync"] == in_sync):
            return view
        assert time.monotonic() < deadline, f"{view['node']} sees its peer as {peer}:\n{node.log()[-3000:]}"
        time.sleep(0.1)


def admin_fingerprint(node: MedlbNode) -> str:
    from medlb.admin.tls import fingerprint

    return fingerprint((node.workdir / "state" / "admin-tls" / "cert.pem").read_bytes())


def test_the_sync_channel_takes_only_the_sync_token_and_pins_the_peer_certificate(pair):
    topo, nodes = pair
    for node in nodes.values():
        node.start()
    a, b = nodes["lb-a"], nodes["lb-b"]

    # Each node sees the other up, with the same config, and pinned its certificate.
    for node, peer in ((a, b), (b, a)):
        view = wait_peer(node)
        assert view["peer"]["cert_fingerprint"] == admin_fingerprint(peer)
        pin = (node.workdir / "state" / "ha" / "peer-cert.sha256").read_text().strip()
        assert pin == admin_fingerprint(peer)
        assert view["config"]["generation"] >= 1 and view["config"]["hash"] == b.api("GET", "/api/v1/ha")[1][
            "config"]["hash"]
        metrics = node.api("GET", "/metrics")[1]
        assert f'medlb_ha_peer_up{{node="{name_of(node)}",peer="{name_of(peer)}"}} 1.0' in metrics
        assert f'medlb_ha_config_in_sync{{node="{name_of(node)}",peer="{name_of(peer)}"}} 1.0' in metrics

    # The sync API: its token opens it, and nothing else does. (A node started before
    # its peer is FAULT until it has taken the peer's decisions: see docs/ha.md.)
    deadline = time.monotonic() + 20
    while role_of(a) not in ("MASTER", "BACKUP"):
        assert time.monotonic() < deadline, a.api("GET", "/api/v1/ha")[1]
        time.sleep(0.1)
    status, answer = a.api("GET", "/api/v1/ha/sync/status", token=SYNC_TOKEN)
    assert status == 200 and answer["node"] == "lb-a" and answer["role"] in ("MASTER", "BACKUP")
    status, answer = a.api("GET", "/api/v1/ha/sync/status", check=False)  # an operator's token
    assert status == 403 and answer["error"] == "the sync API takes the pair's sync token, not an operator's"
    status, answer = a.api("GET", "/api/v1/ha/sync/status", check=False, token="not-the-sync-token")
    assert status == 401, answer
    status, answer = a.api("GET", "/api/v1/ha/sync/status", check=False, token=None)
    assert status == 401, answer
    audit = a.api("GET", "/api/v1/audit?q=ha_sync_refused")[1]
    assert [entry["action"] for entry in audit] == ["ha_sync_refused"], audit
    assert "not-the-sync-token" not in json.dumps(audit) and "not-the-sync-token" not in a.log()
    # ... and the sync token is no operator: refused on every operator route.
    for method, path, body in (("GET", "/api/v1/services", None), ("GET", "/api/v1/ha", None),
                               ("POST", "/api/v1/services/hl7-feed/servers/rs1/state", {"state": "halt"})):
        status, answer = a.api(method, path, body, check=False, token=SYNC_TOKEN)
        assert status == 403 and "sync token opens only /api/v1/ha/sync/" in answer["error"], (path, answer)
    assert a.server("hl7-feed", "rs1")["state"] == "online"

    # The peer's certificate changes (a new one made at its start): refused, and said,
    # until the operator removes the pin on this node.
    pinned = admin_fingerprint(b)
    b.stop(signal.SIGTERM)
    for made in ("cert.pem", "key.pem"):
        (b.workdir / "state" / "admin-tls" / made).unlink()
    b.start()
    view = wait_peer(a, up=False, in_sync=None)
    deadline = time.monotonic() + 20
    while "certificate changed" not in (view["peer"]["error"] or ""):
        assert time.monotonic() < deadline, view["peer"]
        time.sleep(0.2)
        view = a.api("GET", "/api/v1/ha")[1]
    assert pinned in view["peer"]["error"] and admin_fingerprint(b) in view["peer"]["error"]
    assert view["peer"]["cert_fingerprint"] == pinned and view["peer"]["cert_seen"] == admin_fingerprint(b)
    assert "ha_peer_unreachable" in a.log()
    (a.workdir / "state" / "ha" / "peer-cert.sha256").unlink()
    assert wait_peer(a)["peer"]["cert_fingerprint"] == admin_fingerprint(b)


LATE_PORT, SQUATTED_PORT, THIRD_PORT = 7101, 7102, 7103


def service_on(name: str, port: int) -> dict:
    """A tcp service on every address of the node (so each node answers on its own)."""
    return {**SERVICE, "name": name, "listen": f"0.0.0.0:{port}"}


def config_with(node: MedlbNode, *extra: dict) -> str:
    """The node's config file with more services."""
    import yaml

    data = yaml.safe_load(node.config_path.read_text())
    data["services"] = [*data["services"], *extra]
    return yaml.safe_dump(data, sort_keys=False)


def answers_at(topo: Topology, address: str, port: int, client_port: int) -> str | None:
    done = topo["cli"].run(need_tool("timeout"), "3", sys.executable, str(NAMES), "--to", f"{address}:{port}",
                           "--ports", f"{client_port}-{client_port}", check=False)
    return json.loads(done.stdout)[str(client_port)] or None if done.returncode == 0 else None


def services_of(node: MedlbNode) -> list[str]:
    return sorted(service["name"] for service in node.api("GET", "/api/v1/services")[1])


def elect_pair(topo: Topology, nodes: dict[str, MedlbNode], see_peers: bool = True) -> tuple[MedlbNode, MedlbNode]:
    """Both nodes started and one elected: (active, passive), once one alone holds the
    VIP and, with `see_peers`, each sees the other over the sync channel."""
    for node in nodes.values():
        node.start()
    deadline = time.monotonic() + 20
    while len(holders(topo)) != 1:
        assert time.monotonic() < deadline, f"no single holder of the VIP: {holders(topo)}"
        time.sleep(0.05)
    [first] = holders(topo)
    active, passive = (nodes["lb-a"], nodes["lb-b"]) if first == "lb-a" else (nodes["lb-b"], nodes["lb-a"])
    wait_role(active, "MASTER")
    wait_role(passive, "BACKUP")
    if see_peers:
        wait_peer(active)
        wait_peer(passive)
    return active, passive


def test_config_changes_are_made_on_the_active_node_and_on_both_or_neither(pair_apart):
    topo, nodes = pair_apart
    active, passive = elect_pair(topo, nodes)
    first = name_of(active)
    start_text = passive.config_path.read_text()

    # The passive node takes no edit: apply and reload answer 409, a SIGHUP with a
    # changed file is refused; nothing changes there.
    edit = {"text": config_with(passive, service_on("late-feed", LATE_PORT))}
    status, answer = passive.api("POST", "/api/v1/config/apply", edit, check=False)
    assert status == 409 and answer["error"] == (f"{name_of(passive)} is the passive node of the pair: edit the "
                                                 f"active node {first}, which syncs it here"), answer
    assert passive.config_path.read_text() == start_text
    status, answer = passive.api("POST", "/api/v1/reload", check=False)
    assert status == 409 and f"edit the active node {first}" in answer["error"]
    passive.config_path.write_text(edit["text"])
    passive.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "SIGHUP with a changed config refused" not in passive.log():
        assert time.monotonic() < deadline, passive.log()[-3000:]
        time.sleep(0.1)
    passive.config_path.write_text(start_text)
    assert services_of(passive) == ["hl7-feed"]
    audit = passive.api("GET", "/api/v1/audit?q=reload")[1]
    assert [entry["detail"].get("result") for entry in audit] == ["refused"] * 3, audit

    # A change on the active node is applied on the passive one before the answer,
    # audited there as coming from the peer; the new service answers on both.
    status, answer = active.api("POST", "/api/v1/config/apply", edit)
    assert answer["peer"] == f"the peer {name_of(passive)} runs it too (generation 2)", answer
    assert services_of(passive) == ["hl7-feed", "late-feed"]
    assert passive.config_path.read_text() == active.config_path.read_text() == edit["text"]
    for node, address in ((active, BALANCER if first == "lb-a" else BALANCER2),
                          (passive, BALANCER2 if first == "lb-a" else BALANCER)):
        node.wait_health("late-feed", {"rs1": "up", "rs2": "up", "rs3": "up"})
        assert answers_at(topo, address, LATE_PORT, 24000 + LATE_PORT % 100) in {"rs1", "rs2", "rs3"}
    [received] = [entry for entry in passive.api("GET", "/api/v1/audit?q=reload")[1]
                  if entry["detail"].get("result") == "ok"]
    assert received["who"] == f"peer:{first}" and received["detail"]["generation"] == 2
    for node, other in ((active, passive), (passive, active)):
        assert wait_peer(node)["config"]["generation"] == 2
        metrics = node.api("GET", "/metrics")[1]
        assert f'medlb_ha_config_in_sync{{node="{name_of(node)}",peer="{name_of(other)}"}} 1.0' in metrics

    # A config the peer cannot run (a port its host already uses) changes neither node.
    topo.start(passive.node.role, [sys.executable, "-c", "import socket, time; s = socket.socket(); "
                                   f"s.bind(('0.0.0.0', {SQUATTED_PORT})); s.listen(); print('ready', flush=True); "
                                   "time.sleep(600)"])
    refused = {"text": config_with(active, service_on("squatted", SQUATTED_PORT))}
    status, answer = active.api("POST", "/api/v1/config/apply", refused, check=False)
    assert status == 422, answer
    assert answer["error"] == f"the peer {name_of(passive)} refused the config; neither node changed"
    assert any(f"the peer {name_of(passive)} refused" in problem and str(SQUATTED_PORT) in problem
               for problem in answer["problems"]), answer
    for node in (active, passive):
        assert services_of(node) == ["hl7-feed", "late-feed"]
        assert node.config_path.read_text() == edit["text"]
        assert wait_peer(node)["config"]["generation"] == 2
    assert answers_at(topo, BALANCER if first == "lb-a" else BALANCER2, SQUATTED_PORT, 24050) is None

    # The passive node is down during a change: the active commits alone, says so, and
    # brings the peer up to date when it returns.
    passive.stop(signal.SIGTERM)
    third = {"text": config_with(active, service_on("third-feed", THIRD_PORT))}
    status, answer = active.api("POST", "/api/v1/config/apply", third)
    assert answer["peer"].startswith(f"the peer {name_of(passive)} is unreachable") and \
        "it takes generation 3 when it answers again" in answer["peer"], answer
    assert "third-feed" in services_of(active)
    wait_peer(active, up=False, in_sync=None)
    passive.start()
    wait_peer(active, timeout=30)
    assert services_of(passive) == ["hl7-feed", "late-feed", "third-feed"]
    assert passive.config_path.read_text() == third["text"]
    assert wait_peer(passive)["config"]["generation"] == 3
    assert "ha_config_caught_up" in active.log()

    # An edited file and SIGHUP on the active node go the same way.
    sighup = config_with(active, service_on("fourth-feed", THIRD_PORT + 1))
    active.config_path.write_text(sighup)
    active.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "fourth-feed" not in services_of(passive):
        assert time.monotonic() < deadline, active.log()[-3000:]
        time.sleep(0.1)
    assert passive.config_path.read_text() == sighup
    assert wait_peer(active)["config"]["generation"] == 4


def test_a_node_that_committed_alone_keeps_its_change_when_it_returns_as_the_passive_node(pair_apart):
    topo, nodes = pair_apart
    active, passive = elect_pair(topo, nodes)
    first = name_of(active)

    # The passive node is away while the active one commits a change alone; then the
    # active node stops, and the other starts and becomes active with the older config.
    passive.stop(signal.SIGTERM)
    edit = {"text": config_with(active, service_on("late-feed", LATE_PORT))}
    assert "is unreachable" in active.api("POST", "/api/v1/config/apply", edit)[1]["peer"]
    active.stop(signal.SIGTERM)
    passive.start()
    wait_role(passive, "MASTER", timeout=30)
    assert services_of(passive) == ["hl7-feed"]

    # The node that committed alone returns as the passive one: its generation is
    # higher, so the active node takes its config, audited as coming from the peer.
    active.start()
    wait_role(active, "BACKUP")
    view = wait_peer(passive, timeout=30)
    assert view["config"]["generation"] == 2
    assert services_of(passive) == ["hl7-feed", "late-feed"]
    assert passive.config_path.read_text() == edit["text"]
    taken = [entry for entry in passive.api("GET", "/api/v1/audit?q=reload")[1] if entry["detail"].get("result") == "ok"]
    assert [entry["who"] for entry in taken] == [f"peer:{first}"], taken
    assert "direction=\"from the peer\"" in passive.log() or "from the peer" in passive.log()
