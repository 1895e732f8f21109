"""What an engineer and an operator see of layer 4 services, from a real medlb in the
balancer's namespace: `medlb ctl l4` beside `nft`, /metrics rising with traffic, the
audit of actions on an L4 service, and the web page in Chromium (run inside the same
namespace, where the admin API listens).

One topology and one medlb serve the whole module (each topology costs seconds): an
`l4-dr` service (rs1, rs2; rs3 its backup cluster), an `l4-nat` service with
source_nat on another port of the same VIP, and a layer 7 `tcp` service beside them.
Each test leaves every server online and the pool on its primaries.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import need_tool
from medlb_node import ADMIN_PORT, TOKEN, MedlbNode
from prometheus_client.parser import text_string_to_metric_families
from topology import BALANCER, Topology
from traffic import CLOSING_PORT, HOLDER, HTTP_PORT, LINE_PORT, names_by_port, start_servers

from medlb.passwords import hash_password

HEALTH = {"type": "tcp", "port": LINE_PORT, "interval": "300ms", "timeout": "300ms", "fall": 2, "rise": 2}
#: The NAT service's port on the VIP; its servers answer on LINE_PORT.
NAT_PORT = 17000
PASSWORD = "operator-pass-1"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"


def services(topo: Topology) -> list[dict]:
    servers = {node.role: node.address for node in topo.servers}
    return [
        {"name": "pacs", "mode": "l4-dr", "listen": [f"{topo.vip}:{HTTP_PORT}", f"{topo.vip}:{LINE_PORT}-{CLOSING_PORT}"],
         "scheduler": "maglev", "l4": {"interface": "eth0"}, "health": HEALTH, "failback": "manual",
         "servers": [{"name": name, "address": servers[name]} for name in ("rs1", "rs2")],
         "backup": [{"name": "rs3", "address": servers["rs3"]}]},
        {"name": "vna", "mode": "l4-nat", "listen": [f"{topo.vip}:{NAT_PORT}"], "scheduler": "maglev",
         "l4": {"interface": "eth0", "source_nat": True}, "health": HEALTH,
         "servers": [{"name": name, "address": f"{address}:{LINE_PORT}"} for name, address in servers.items()]},
        {"name": "ris", "mode": "tcp", "listen": [f"{BALANCER}:8080"],
         "servers": [{"name": "rs1", "address": f"{servers['rs1']}:{HTTP_PORT}"}]},
    ]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and nftables")
    for tool in ("ip", "nft", "conntrack"):
        need_tool(tool)
    with Topology("dr", balancer_prepared=False) as topo:
        start_servers(topo)
        medlb = MedlbNode(topo["lb"], tmp_path_factory.mktemp("l4-visibility"), services(topo))
        medlb.config["admin"]["users"] = [{"name": "olga", "password_hash": hash_password(PASSWORD, n=2**14),
                                          "role": "operator"}]
        medlb.write_config()
        medlb.start()
        try:
            medlb.wait_kernel("pacs", {"rs1", "rs2"})
            medlb.wait_kernel("vna", {"rs1", "rs2", "rs3"})
            yield topo, medlb
        finally:
            medlb.stop()


def ctl(medlb: MedlbNode, *args: str) -> subprocess.CompletedProcess[str]:
    """`medlb ctl` run inside the balancer's namespace, where the API listens."""
    return medlb.node.run("env", f"MEDLB_TOKEN={TOKEN}", sys.executable, "-m", "medlb", "ctl",
                          "--url", f"http://127.0.0.1:{ADMIN_PORT}", *args, check=False)


def nft_counters(topo: Topology) -> dict[str, tuple[int, int]]:
    listing = json.loads(topo["lb"].run("nft", "-j", "list", "counters", "table", "netdev", "medlb_dr").stdout)
    return {item["counter"]["name"]: (item["counter"]["packets"], item["counter"]["bytes"])
            for item in listing["nftables"] if "counter" in item}


def metrics(medlb: MedlbNode) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics as {(name, labels): value}."""
    text = medlb.api("GET", "/metrics")[1]
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    found = [value for (sample, have), value in samples.items()
             if sample == name and set(labels.items()) <= have]
    assert found, f"/metrics has no {name} {labels}"
    return sum(found)


def hold(topo: Topology, port: int, client_ports: range) -> subprocess.Popen[str]:
    """Connections held open from the client to the VIP's `port` (tests/netns/peers/holder.py)."""
    process = topo.start("cli", [sys.executable, str(HOLDER), "--to", f"{topo.vip}:{port}",
                                 "--ports", f"{client_ports.start}-{client_ports.stop - 1}"], ready=None)
    assert process.stdout is not None
    assert process.stdout.readline(), "the holder could not connect"
    return process


def test_ctl_l4_prints_what_nft_lists(site):
    topo, medlb = site
    names_by_port(topo, range(45000, 45030))

    shown = ctl(medlb, "l4", "pacs")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    print(out)
    assert "pacs [l4-dr]: table netdev medlb_dr, chain svc_pacs, interface eth0" in out
    rules = out.split("rules as medlb renders them", 1)[1]
    assert "add chain netdev medlb_dr svc_pacs" in rules and "fwd to \"eth0\"" in rules

    # Each server's row: its mark and MAC are the ones in the kernel's map, its new
    # flows the kernel's named counter.
    view = json.loads(ctl(medlb, "l4", "pacs", "--json").stdout)
    macs = topo["lb"].run("nft", "list", "map", "netdev", "medlb_dr", "macs_pacs").stdout
    counted = nft_counters(topo)
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("rs1 ", "rs2 ", "rs3 "))}
    for server in view["servers"]:
        row = rows[server["name"]]
        assert row[1] == server["mark"] and row[3] == topo[server["name"]].mac == server["mac"]
        new_flows = counted[f"new_pacs/{server['name']}"][0]
        assert server["new_flows"] == new_flows and str(new_flows) in row[9:]
        assert (f"{server['mark']} : {server['mac']}" in macs) == server["forwarding"]
    assert [rows[name][4] for name in ("rs1", "rs2", "rs3")] == ["yes", "yes", "no"]  # takes new flows
    assert sum(server["new_flows"] for server in view["servers"]) >= 30

    nat = ctl(medlb, "l4", "vna")
    assert nat.returncode == 0, nat.stderr
    assert re.search(rf"^rs1 +0x[0-9a-f]{{8}} +{topo['rs1'].address}:{LINE_PORT} ", nat.stdout, re.M), nat.stdout
    assert "FLOWS (CONNTRACK)" in nat.stdout

    refused = ctl(medlb, "l4", "ris")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "service 'ris' is mode tcp, not a kernel layer 4 service" in refused.stderr
    assert ctl(medlb, "l4", "nope").returncode == 1


def test_an_action_on_an_l4_service_is_audited_and_in_force_in_the_kernel(site):
    topo, medlb = site
    medlb.set_state("pacs", "rs2", "drain")
    try:
        taking = {server["name"]: server["takes_new_flows"] for server in medlb.l4("pacs")["servers"]}
        assert taking == {"rs1": True, "rs2": False, "rs3": False}  # answered: in force in the kernel
        entry = medlb.api("GET", "/api/v1/audit?q=pacs/rs2")[1][0]
        assert (entry["action"], entry["target"], entry["detail"]) == \
            ("set_state", "pacs/rs2", {"from": "online", "to": "drain"})
        assert set(names_by_port(topo, range(45100, 45120)).values()) == {"rs1"}
    finally:
        medlb.set_state("pacs", "rs2", "online")
    # Not failed over: a failback changes nothing, says so, and is not audited as an action.
    audited_before = medlb.api("GET", "/api/v1/audit?q=failback")[1]
    status, body = medlb.api("POST", "/api/v1/services/pacs/failback", check=False)
    assert (status, body) == (409, {"error": "not failed over: nothing to fail back"})
    assert medlb.api("GET", "/api/v1/audit?q=failback")[1] == audited_before


def test_metrics_show_the_kernel_counters_rising_with_traffic(site):
    topo, medlb = site
    before = metrics(medlb)
    answers = names_by_port(topo, range(45200, 45240))
    holder = hold(topo, NAT_PORT, range(45300, 45312))
    try:
        after = metrics(medlb)
    finally:
        holder.kill()

    for name in ("rs1", "rs2"):
        server = {"service": "pacs", "server": name}
        grown = {metric: total(after, metric, **server) - total(before, metric, **server)
                 for metric in ("medlb_l4_server_new_flows_total", "medlb_l4_server_packets_total",
                                "medlb_l4_server_bytes_total")}
        flows = sum(1 for answered in answers.values() if answered == name)
        assert grown["medlb_l4_server_new_flows_total"] == flows, (name, grown, answers)
        assert grown["medlb_l4_server_packets_total"] >= 3 * flows  # SYN, ACK, FIN at least
        assert grown["medlb_l4_server_bytes_total"] >= 40 * grown["medlb_l4_server_packets_total"]
        # The layer 7 names carry the kernel's new flows too.
        assert total(after, "medlb_server_connections_total", **server) == \
            total(after, "medlb_l4_server_new_flows_total", **server)
    assert total(after, "medlb_l4_server_new_flows_total", service="pacs", server="rs3") == \
        total(before, "medlb_l4_server_new_flows_total", service="pacs", server="rs3"), "the backup took flows"
    # NAT: the held connections are in conntrack, counted per server.
    assert total(after, "medlb_l4_server_flows", service="vna") >= 12
    assert total(after, "medlb_l4_server_new_flows_total", service="vna") - \
        total(before, "medlb_l4_server_new_flows_total", service="vna") == 12
    assert not any(name == "medlb_l4_server_flows" and ("service", "pacs") in labels for name, labels in after), \
        "DR pins are not counted per scrape"
    assert total(after, "medlb_l4_no_server_packets_total", service="pacs") == \
        total(before, "medlb_l4_no_server_packets_total", service="pacs")
    assert total(after, "medlb_l4_kernel_error") == 0
    assert total(after, "medlb_server_up", service="ris", server="rs1") == 1  # layer 7 beside


def test_the_page_shows_the_kernel_and_its_actions_work_on_l4(site, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    need_tool("chromium")
    expect = sync_api.expect
    topo, medlb = site
    # Chromium runs inside the balancer's namespace: Playwright talks to it over a
    # pipe, which `ip netns exec` passes on.
    browser_in_netns = tmp_path / "chromium"
    browser_in_netns.write_text(f'#!/bin/sh\nexec ip netns exec {topo["lb"].netns} /usr/bin/chromium "$@"\n')
    browser_in_netns.chmod(0o755)
    base = f"http://127.0.0.1:{ADMIN_PORT}"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(browser_in_netns), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        page.set_default_timeout(20000)
        expect.set_options(timeout=20000)
        try:
            page.goto(base + "/")
            page.get_by_label("User name").fill("olga")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#services tbody tr")).to_have_count(3)
            names_by_port(topo, range(45400, 45430))
            page.goto(base + "/#/service/pacs")

            summary = page.locator("dl.summary")
            for words in ("l4-dr", "eth0", f"{topo.vip}:{HTTP_PORT}"):
                expect(summary).to_contain_text(words)
            view = medlb.l4("pacs")
            kernel = page.locator("table#kernel")
            expect(kernel.locator("tbody tr")).to_have_count(3)
            for server in view["servers"]:
                row = kernel.locator(f"tr[data-kernel-server='{server['name']}']")
                expect(row.locator("td[data-col='mark']")).to_have_text(server["mark"])
                expect(row.locator("td[data-col='target']")).to_have_text(topo[server["name"]].mac)
            rs1 = kernel.locator("tr[data-kernel-server='rs1']")
            expect(rs1.locator("td[data-col='takes']")).to_have_text("yes")
            expect(rs1.locator("td[data-col='share']")).to_have_text(re.compile(r"^(4[5-9]|5[0-5])\.\d%$"))
            expect(kernel.locator("tr[data-kernel-server='rs3'] td[data-col='takes']")).to_have_text("no")
            # A count above 0 (waited for, as the page fills the cells once it has counted).
            expect(rs1.locator("td[data-col='new-flows']")).to_have_text(re.compile(r"^[1-9][\d,]*$"))
            expect(rs1.locator("td[data-col='flows']")).to_have_text(re.compile(r"^[1-9][\d,]*$"))  # pins
            ruleset = page.locator("#kernel-ruleset")
            expect(ruleset).to_be_hidden()
            page.locator("#kernel-rules summary").click()
            expect(ruleset).to_contain_text("add chain netdev medlb_dr svc_pacs")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "service-l4-dr.png"), full_page=True)
            page.locator("#kernel-recount").click()  # a refresh keeps the rules open
            expect(page.locator("#kernel-flows-at")).to_contain_text("counted")
            expect(ruleset).to_be_visible()

            # The operator's buttons are there and work as on layer 7.
            page.locator("button[data-action='halt'][data-server='rs1']").click()
            expect(page.locator("dialog#confirm")).to_contain_text("rs1 will take no new flows at all")
            page.locator("#confirm-ok").click()
            expect(rs1.locator("td[data-col='takes']")).to_have_text("no")
            assert set(names_by_port(topo, range(45500, 45520)).values()) == {"rs2"}
            page.locator("button[data-action='online'][data-server='rs1']").click()
            page.locator("#confirm-ok").click()
            expect(rs1.locator("td[data-col='takes']")).to_have_text("yes")

            page.locator("button[data-pool-action='halt-primary']").click()
            expect(page.locator("dialog#confirm")).to_contain_text("New work goes to the backup cluster: rs3")
            page.locator("#confirm-ok").click()
            expect(page.locator("#view h1")).to_contain_text("FAILED OVER")
            expect(kernel.locator("tr[data-kernel-server='rs3'] td[data-col='takes']")).to_have_text("yes")
            assert set(names_by_port(topo, range(45520, 45540)).values()) == {"rs3"}
            page.locator("button[data-pool-action='online-primary']").click()
            expect(page.locator("dialog#confirm")).to_contain_text("until you press Failback")
            page.locator("#confirm-ok").click()
            page.locator("button[data-pool-action='failback']").click()
            page.locator("#confirm-ok").click()
            expect(page.locator("#view h1")).to_contain_text("OK")
            medlb.wait_kernel("pacs", {"rs1", "rs2"})
            assert set(names_by_port(topo, range(45540, 45580)).values()) == {"rs1", "rs2"}

            page.get_by_role("link", name="Audit").click()
            audit = page.locator("#audit tbody")
            expect(audit.locator("tr").first).to_contain_text("failback")
            for words in ("set_pool_state", "pacs/rs1", "olga"):
                expect(audit).to_contain_text(words)

            page.goto(base + "/#/service/vna")
            nat = page.locator("table#kernel")
            expect(nat.locator("tr[data-kernel-server='rs2'] td[data-col='target']")).to_have_text(
                f"{topo['rs2'].address}:{LINE_PORT}")
            expect(nat.locator("thead")).to_contain_text("Flows (conntrack)")
            page.screenshot(path=str(ARTIFACTS / "service-l4-nat.png"), full_page=True)
            assert [url for url in requests if urlsplit(url).netloc not in ("", f"127.0.0.1:{ADMIN_PORT}")] == []
        finally:
            context.close()
            browser.close()
