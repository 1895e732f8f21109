"""`l4-dr` services run by a real medlb inside the balancer's namespace.

medlb programs the kernel; the client, three servers (one of them, in some tests, the
backup cluster) and the switch are namespaces of their own. What each test proves is
what a user sees: who answers new connections, whether held connections live on,
whether the reply bytes cross the balancer.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import need_tool
from dicom_helpers import sample_files
from medlb_node import MedlbNode
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)
from traffic import (
    CLOSING_PORT,
    DOWNLOAD,
    HTTP_PORT,
    LINE_PORT,
    Holder,
    download_at_balancer,
    fail_over_and_back_by_hand,
    names_by_port,
    start_servers,
)

DICOM_SCP = Path(__file__).parents[1] / "peers" / "dicom_scp.py"
#: Health checks fast enough for a test: a failed server is down within 0.6 s.
HEALTH = {"type": "tcp", "port": LINE_PORT, "interval": "300ms", "timeout": "300ms", "fall": 2, "rise": 2}


def dr_service(topo, *, backup: list[str] = (), **extra) -> dict:
    servers = [{"name": node.role, "address": node.address} for node in topo.servers if node.role not in backup]
    return {"name": "pacs", "mode": "l4-dr",
            "listen": [f"{topo.vip}:{HTTP_PORT}", f"{topo.vip}:{LINE_PORT}-{CLOSING_PORT}"],
            "scheduler": "maglev", "l4": {"interface": "eth0"}, "health": HEALTH,
            "servers": servers,
            "backup": [{"name": node.role, "address": node.address} for node in topo.servers if node.role in backup],
            **extra}


def started(topo, tmp_path, service: dict, **top) -> MedlbNode:
    start_servers(topo)
    medlb = MedlbNode(topo["lb"], tmp_path, [service], **top).start()
    primaries = {server["name"] for server in service["servers"]}
    medlb.wait_kernel("pacs", primaries)  # checked, MACs resolved, in the Maglev table
    return medlb


def medlb_tables(topo) -> list[str]:
    listing = json.loads(topo["lb"].run("nft", "-j", "list", "tables").stdout)
    return [f'{item["table"]["family"]} {item["table"]["name"]}' for item in listing["nftables"] if "table" in item]


def vips(topo) -> list[str]:
    done = topo["lb"].run("ip", "-o", "-4", "addr", "show", "dev", "eth0")
    return [line.split()[3] for line in done.stdout.splitlines()]


@pytest.mark.parametrize("workers", [1, 2])
def test_dr_spreads_flows_and_the_reply_bytes_do_not_cross_the_balancer(topology, tmp_path, workers):
    """With worker processes too: they relay layer 7 only; the control process steers the kernel."""
    topo = topology("dr", balancer_prepared=False)
    medlb = started(topo, tmp_path, dr_service(topo), workers=workers)
    assert f"{topo.vip}/32" in vips(topo), "medlb did not put the VIP on l4.interface"

    answers = names_by_port(topo, range(42000, 42060))
    assert set(answers.values()) == {"rs1", "rs2", "rs3"}

    received = download_at_balancer(topo, 42100, "DR through medlb")
    assert received < 0.05 * DOWNLOAD, "reply bytes crossed the balancer"

    view = medlb.l4("pacs")
    flows = {server["name"]: server["new_flows"] for server in view["servers"]}
    assert sum(flows.values()) >= 61, f"the kernel's new-flow counters missed connections: {flows}"
    assert all(server["mac"] == topo[server["name"]].mac for server in view["servers"])


def test_a_server_that_fails_its_check_gets_no_new_flows(topology, tmp_path):
    topo = topology("dr", balancer_prepared=False)
    medlb = started(topo, tmp_path, dr_service(topo))
    # rs2 stops answering its check (and new connections): its check port is closed.
    topo["rs2"].run("nft", "-f", "-", input="add table ip block\nadd chain ip block in { type filter hook input "
                                           "priority 0; policy accept; }\n"
                                           f"add rule ip block in tcp dport {LINE_PORT} ip saddr 198.18.0.10 drop\n")
    failed = time.monotonic()
    medlb.wait_health("pacs", {"rs2": "down"}, timeout=10)
    down = time.monotonic() - failed
    medlb.wait_kernel("pacs", {"rs1", "rs3"}, timeout=10)
    print(f"\nrs2 down after {down:.2f} s, out of the kernel's table after {time.monotonic() - failed:.2f} s "
          "(interval 0.3 s x fall 2, timeout 0.3 s)")
    answers = names_by_port(topo, range(42200, 42260))
    assert "rs2" not in answers.values()
    assert set(answers.values()) == {"rs1", "rs3"}


@pytest.mark.parametrize("on_halt", ["keep", "close"])
def test_drain_keeps_established_flows_and_halt_follows_on_halt(topology, tmp_path, on_halt):
    topo = topology("dr", balancer_prepared=False)
    medlb = started(topo, tmp_path, dr_service(topo, on_halt=on_halt))
    holder = Holder(topo, range(42300, 42330))
    on_rs1 = [port for port, name in holder.servers.items() if name == "rs1"]
    assert on_rs1, f"no held connection on rs1: {holder.servers}"

    medlb.set_state("pacs", "rs1", "drain")
    assert set(holder.echo().values()) == {"ok"}, "drain cut established flows"
    assert "rs1" not in names_by_port(topo, range(42400, 42440)).values()

    medlb.set_state("pacs", "rs1", "halt")
    results = holder.echo()
    on_others = {port: result for port, result in results.items() if port not in on_rs1}
    assert set(on_others.values()) == {"ok"}, "halting rs1 touched other servers' flows"
    on_halted = {results[port] for port in on_rs1}
    if on_halt == "keep":
        assert on_halted == {"ok"}, "on_halt: keep cut rs1's flows"
    else:
        assert "ok" not in on_halted, f"on_halt: close left rs1's flows running: {on_halted}"


def test_failover_to_the_backup_cluster_and_manual_failback(topology, tmp_path):
    topo = topology("dr", balancer_prepared=False)
    medlb = started(topo, tmp_path, dr_service(topo, backup=["rs3"], failback="manual"))
    assert set(names_by_port(topo, range(42500, 42540)).values()) == {"rs1", "rs2"}
    fail_over_and_back_by_hand(topo, medlb, "pacs", {"rs1", "rs2"}, "rs3", 42540)


def test_a_server_coming_back_moves_no_established_flow(topology, tmp_path):
    topo = topology("dr", balancer_prepared=False)
    medlb = started(topo, tmp_path, dr_service(topo))
    medlb.set_state("pacs", "rs3", "drain")
    holder = Holder(topo, range(42700, 42760))
    assert "rs3" not in holder.servers.values()
    medlb.set_state("pacs", "rs3", "online")
    assert set(holder.echo().values()) == {"ok"}, "flows moved when rs3 came back"
    assert "rs3" in names_by_port(topo, range(42800, 42860)).values(), "rs3 takes no new flows"


def test_kill_9_leaves_the_kernel_forwarding_and_a_restart_adopts_it(topology, tmp_path):
    topo = topology("dr", balancer_prepared=False)
    medlb = started(topo, tmp_path, dr_service(topo))
    holder = Holder(topo, range(42900, 42930))
    download = topo.start("cli", ["curl", "-sS", "--limit-rate", "20M", "-o", "/dev/null", "-w", "%{size_download}",
                                  f"http://{topo.vip}:{HTTP_PORT}/download/{DOWNLOAD}"], ready=None)
    time.sleep(0.5)
    pins_before = sum(server["flows"] or 0 for server in medlb.l4("pacs")["servers"])
    medlb.stop(signal.SIGKILL)

    out, err = download.communicate(timeout=60)
    assert int(out or 0) == DOWNLOAD, f"the transfer broke when medlb was killed: {err}"
    assert set(holder.echo().values()) == {"ok"}
    assert set(names_by_port(topo, range(43000, 43030)).values()) == {"rs1", "rs2", "rs3"}, \
        "new connections need medlb's process"

    medlb.start()
    medlb.wait_kernel("pacs", {"rs1", "rs2", "rs3"})
    assert medlb_tables(topo) == ["netdev medlb_dr"], "the restart made a second table"
    pins_after = sum(server["flows"] or 0 for server in medlb.l4("pacs")["servers"])
    assert pins_before >= 30 and pins_after >= pins_before - 1, (pins_before, pins_after)
    assert set(holder.echo().values()) == {"ok"}, "the restart moved established flows"


def test_sigterm_removes_the_tables_and_the_vip_unless_on_stop_keep(topology, tmp_path):
    topo = topology("dr", balancer_prepared=False)
    medlb = started(topo, tmp_path, dr_service(topo))
    assert medlb_tables(topo) == ["netdev medlb_dr"]
    assert medlb.stop() == 0
    assert medlb_tables(topo) == []
    assert f"{topo.vip}/32" not in vips(topo)

    medlb.write_config([dr_service(topo, l4={"interface": "eth0", "on_stop": "keep"})])
    medlb.start()
    medlb.wait_kernel("pacs", {"rs1", "rs2", "rs3"})
    assert medlb.stop() == 0
    assert medlb_tables(topo) == ["netdev medlb_dr"], "on_stop: keep removed the table"
    assert f"{topo.vip}/32" in vips(topo), "on_stop: keep removed the VIP"
    assert set(names_by_port(topo, range(43100, 43130)).values()) == {"rs1", "rs2", "rs3"}, \
        "the kept table stopped forwarding"


def test_dicom_behind_a_dr_vip_checked_by_c_echo_stores_on_the_servers(topology, tmp_path):
    """The issue's PACS retrieval VIP: DICOM on 104 and 11112, dicom-echo checks to each
    server's own address, storescu (dcmtk) through the VIP; each file lands on a server."""
    storescu_path = need_tool("storescu")
    topo = topology("dr", balancer_prepared=False)
    stores = {}
    for node in topo.servers:
        stores[node.role] = tmp_path / f"store-{node.role}"
        stores[node.role].mkdir()
        for port in (104, 11112):
            topo.start(node.role, [sys.executable, str(DICOM_SCP), "--ae", "PACS", "--host", "0.0.0.0",
                                   "--port", str(port), "--store", str(stores[node.role])])
    service = {"name": "pacs", "mode": "l4-dr", "listen": [f"{topo.vip}:104", f"{topo.vip}:11112"],
               "l4": {"interface": "eth0"}, "on_halt": "close",
               "health": {"type": "dicom-echo", "interval": "1s", "timeout": "1s", "fall": 2, "rise": 2},
               "servers": [{"name": node.role, "address": node.address, "ae_title": "PACS"}
                           for node in topo.servers]}
    medlb = MedlbNode(topo["lb"], tmp_path, [service]).start()
    deadline = time.monotonic() + 30
    while True:  # every server answered a C-ECHO (a check's first answer sets its reason)
        checks = {server["name"]: (server["last_check"] or {}).get("reason")
                  for server in medlb.service("pacs")["servers"]}
        if set(checks.values()) == {"C-ECHO status 0x0000"} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(checks.values()) == {"C-ECHO status 0x0000"}, checks
    medlb.wait_kernel("pacs", {"rs1", "rs2", "rs3"})

    files = sample_files()
    for index, path in enumerate(files):
        port = 104 if index % 2 else 11112
        done = topo["cli"].run(storescu_path, "-aet", "CT1", "-aec", "PACS", topo.vip, str(port), str(path),
                               check=False)
        assert done.returncode == 0, done.stderr or done.stdout
    stored = sum(len(list(folder.iterdir())) for folder in stores.values())
    assert stored == len(files), f"{stored} of {len(files)} files reached a server"
