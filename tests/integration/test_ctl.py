"""`medlb ctl` against a running medlb over HTTPS (the default), verified with the
generated certificate."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from helpers import LOOPBACK, TOKEN, free_port, free_ports, http_service, server, service, wait_until, who_answers

OPERATOR = "ctl-operator-token-0123456789"
VIEWER = "ctl-viewer-token-0123456789ab"


def ctl(lb, *args: str, token: str = TOKEN, token_file: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLB_")}
    env.update({"MEDLB_URL": lb.base_url, "MEDLB_CA": str(lb.cert_path)})
    if token_file:
        env["MEDLB_TOKEN_FILE"] = token_file
    else:
        env["MEDLB_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "medlb", "ctl", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_ctl_status_servers_actions_failover_and_audit(medlb, backends, tmp_path):
    vip, a, b, c = free_ports(4)
    for name, port in (("A", a), ("B", b), ("C", c)):
        backends.start(name, port)
    admin_port = free_port()
    lb = medlb([service("pacs", vip, [server("A", a), server("B", b)], backup=[server("C", c)], failback="manual")],
               start=False, admin={"listen": f"{LOOPBACK}:{admin_port}", "token": TOKEN, "tokens": [
                   {"name": "ops", "token": OPERATOR, "role": "operator"},
                   {"name": "watch", "token": VIEWER, "role": "viewer"}]})
    lb.admin_port, lb.base_url = admin_port, f"https://{LOOPBACK}:{admin_port}"
    lb.client = httpx.Client(base_url=lb.base_url, verify=False, headers={"Authorization": f"Bearer {TOKEN}"})
    lb.start()
    for name in "ABC":
        lb.wait_health("pacs", name, "up", 15)

    status = ctl(lb, "status")
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()[:2]
    assert header.split()[:3] == ["SERVICE", "MODE", "LISTEN"]
    assert row.split()[0] == "pacs" and "primary" in row and "2/3 +1 standby" in row

    servers = ctl(lb, "servers", "pacs")
    assert servers.returncode == 0
    assert "2/3 taking work, 1 standby" in servers.stdout.splitlines()[0]
    assert status_words(servers.stdout) == {"A": "takes work", "B": "takes work", "C": "standby (backup cluster)"}

    token_file = tmp_path / "token"
    token_file.write_text(OPERATOR + "\n")
    halted = ctl(lb, "halt", "pacs", "A", token_file=str(token_file))
    assert halted.returncode == 0, halted.stderr
    assert lb.server("pacs", "A")["state"] == "halt"
    assert {who_answers(vip) for _ in range(4)} == {"B"}

    refused = ctl(lb, "drain", "pacs", "B", token=VIEWER)
    assert refused.returncode == 1 and "operator role" in refused.stderr

    assert ctl(lb, "online", "pacs", "A", token=OPERATOR).returncode == 0
    failover = ctl(lb, "failover", "pacs", token=OPERATOR)
    assert failover.returncode == 0, failover.stderr
    assert lb.service("pacs")["active_pool"] == "backup"
    assert {who_answers(vip) for _ in range(4)} == {"C"}
    assert ctl(lb, "restore", "pacs", token=OPERATOR).returncode == 0
    assert lb.service("pacs")["active_pool"] == "backup"  # failback: manual keeps it there
    waiting = ctl(lb, "servers", "pacs")
    assert status_words(waiting.stdout) == {"A": "ready: waiting for failback", "B": "ready: waiting for failback",
                                            "C": "takes work"}
    assert [s["status"] for s in lb.service("pacs")["servers"]] == ["waiting_for_failback"] * 2 + ["takes_work"]
    assert ctl(lb, "failback", "pacs", token=OPERATOR).returncode == 0
    wait_until(lambda: lb.service("pacs")["active_pool"] == "primary", 10, what="failback")

    assert ctl(lb, "reload", token=OPERATOR).returncode == 1
    reloaded = ctl(lb, "reload")
    assert reloaded.returncode == 0 and "reloaded: pacs" in reloaded.stdout

    audit = ctl(lb, "audit", "--limit", "20")
    assert audit.returncode == 0
    lines = audit.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "AT", "(UTC)"]
    actions = [line.split()[4] for line in lines[1:]]
    assert actions[:4] == ["reload", "failback", "set_pool_state", "set_pool_state"]
    assert "ops" in audit.stdout
    assert "Failed pacs back to the primary servers" in lines[2]  # a sentence, not JSON
    assert "Halted the primary servers of pacs (A, B)" in audit.stdout and "{" not in audit.stdout


def status_words(out: str) -> dict[str, str]:
    """Each server's STATUS cell of `ctl servers`."""
    lines = out.splitlines()[1:]
    start, end = lines[0].index("STATUS"), lines[0].index("WEIGHT")
    return {line.split()[0]: line[start:end].strip() for line in lines[1:]}


def test_ctl_says_what_is_wrong(medlb, backends, tmp_path):
    lb = medlb([service("pacs", free_port(), [server("A", free_port())])])
    env_less = ctl(lb, "status", token="")
    assert env_less.returncode == 1 and "no token" in env_less.stderr
    # medlb from helpers serves plain HTTP on loopback; a bad token is refused.
    lb.base_url = f"http://{LOOPBACK}:{lb.admin_port}"
    bad = ctl(lb, "status", token="wrong-token-0123456789")
    assert bad.returncode == 1 and "not valid" in bad.stderr
    lb.base_url = f"http://{LOOPBACK}:{free_port()}"
    assert "cannot reach" in ctl(lb, "status").stderr


def admin_lb(medlb, services):
    """A medlb over HTTPS with the admin and the operator token, as `ctl` talks to it."""
    admin_port = free_port()
    lb = medlb(services, start=False, admin={"listen": f"{LOOPBACK}:{admin_port}", "token": TOKEN, "tokens": [
        {"name": "ops", "token": OPERATOR, "role": "operator"}]})
    lb.admin_port, lb.base_url = admin_port, f"https://{LOOPBACK}:{admin_port}"
    lb.client = httpx.Client(base_url=lb.base_url, verify=False, headers={"Authorization": f"Bearer {TOKEN}"})
    lb.start()
    return lb


def test_ctl_failback_that_changes_nothing_says_why_and_is_not_audited(medlb, backends):
    vip, a, c = free_ports(3)
    backends.start("A", a)
    backends.start("C", c)
    lb = admin_lb(medlb, [service("pacs", vip, [server("A", a)], backup=[server("C", c)], failback="manual")])
    lb.wait_health("pacs", "A", "up", 15)

    nothing = ctl(lb, "failback", "pacs", token=OPERATOR)
    assert nothing.returncode == 1 and "not failed over: nothing to fail back" in nothing.stderr, nothing
    assert "failed back" not in nothing.stdout

    assert ctl(lb, "failover", "pacs", token=OPERATOR).returncode == 0
    wait_until(lambda: lb.service("pacs")["active_pool"] == "backup", 10, what="failover")
    halted = ctl(lb, "failback", "pacs", token=OPERATOR)
    assert halted.returncode == 1, halted
    assert "no primary server is online: staying on the backup cluster" in halted.stderr
    response = lb.api("POST", "/api/v1/services/pacs/failback", json={})
    assert response.status_code == 409
    assert response.json()["error"] == "no primary server is online: staying on the backup cluster"
    assert lb.service("pacs")["active_pool"] == "backup" and lb.service("pacs")["failed_over"] is True
    actions = [entry["action"] for entry in lb.api("GET", "/api/v1/audit").json()]
    assert "failback" not in actions and actions[0] == "set_pool_state"


def test_ctl_failover_without_a_backup_is_refused_unless_forced(medlb, backends):
    vip, a = free_ports(2)
    backends.start("A", a)
    lb = admin_lb(medlb, [service("ris", vip, [server("A", a)])])
    lb.wait_health("ris", "A", "up", 15)

    refused = ctl(lb, "failover", "ris", token=OPERATOR)
    assert refused.returncode == 1, refused
    assert "NO server" in refused.stderr and "--force" in refused.stderr
    assert "traffic goes to the backup" not in refused.stdout + refused.stderr
    assert lb.server("ris", "A")["state"] == "online"
    assert who_answers(vip) == "A"

    forced = ctl(lb, "failover", "ris", "--force", token=OPERATOR)
    assert forced.returncode == 0, forced
    assert "NO server" in forced.stdout and "traffic goes to the backup" not in forced.stdout
    assert lb.service("ris")["active_pool"] == "none"


def test_ctl_unlock_lifts_an_address_lock_out_and_says_when_there_is_none(medlb):
    admin_port = free_port()
    lb = medlb([service("pacs", free_port(), [server("A", free_port())])], start=False, admin={
        "listen": f"{LOOPBACK}:{admin_port}", "token": TOKEN, "lockout": {"source_attempts": 1}})
    lb.admin_port, lb.base_url = admin_port, f"https://{LOOPBACK}:{admin_port}"
    lb.start()
    web = httpx.Client(base_url=lb.base_url, verify=False, timeout=10)
    assert web.post("/api/v1/login", json={"name": "nobody", "password": "x"}).status_code == 429

    lifted = ctl(lb, "unlock", "--address", "127.0.0.1")
    assert lifted.returncode == 0, lifted
    assert lifted.stdout.strip() == "lifted the login lock-out of address 127.0.0.1"
    nothing = ctl(lb, "unlock", "--address", "127.0.0.1")
    assert nothing.returncode == 1 and "address 127.0.0.1 is not locked out: nothing to lift" in nothing.stderr
    assert web.post("/api/v1/login", json={"name": "nobody", "password": "x"}).status_code == 429  # locked again


def test_ctl_failures_shows_the_servers_that_fail_and_the_last_failures_the_page_shows(medlb, backends):
    vip, web, a = free_ports(3)
    backends.start("A", a)
    lb = admin_lb(medlb, [service("pacs", vip, [server("A", a)]),
                          http_service("api", web, [server("d", free_port())])])
    lb.wait_health("pacs", "A", "up", 15)
    lb.wait_health("api", "d", "down", 15)
    assert httpx.get(f"http://{LOOPBACK}:{web}/x", timeout=10).status_code == 503
    reason = lb.server("api", "d")["health_reason"]
    assert reason

    every = ctl(lb, "failures", token=OPERATOR)
    assert every.returncode == 0, every
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in every.stdout.strip().split("\n\n")}
    assert blocks["pacs [tcp]"] == ["every server passes its health check; no connect failures"]
    api = blocks["api [http]"]
    assert api[0].split()[:3] == ["SERVER", "HEALTH", "SINCE"]
    assert api[1].split()[:2] == ["d", "down"] and reason in api[1]
    assert api[2] == "last 502, 503 and 504 answers (newest first):"
    assert api[4].split()[2:] == ["503", "no_server", "-"]

    one = ctl(lb, "failures", "api", token=OPERATOR)
    assert one.returncode == 0 and one.stdout.splitlines()[0] == "api [http]" and "pacs" not in one.stdout
    assert "no service named 'nothere'" in ctl(lb, "failures", "nothere").stderr
