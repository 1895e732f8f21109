"""Running out of file descriptors: medlb raises its limit, keeps a reserve for the
control plane, refuses data-plane clients at its ceiling, and never blames a server.

medlb runs with RLIMIT_NOFILE set as `prlimit` would (soft and hard at 256, so raising
cannot help); a real backend answers behind a tcp service, and more clients connect
than the limit can hold.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import LOOPBACK, connect, free_ports, server, service, wait_until, who_answers

LIMIT = 256
#: More clients than the limit holds (each relayed connection takes two descriptors).
CLIENTS = 300


def metric(lb, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels match."""
    response = lb.api("GET", "/metrics")
    assert response.status_code == 200
    return sum(sample.value for family in text_string_to_metric_families(response.text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def open_files(pid: int) -> tuple[int, int]:
    """(soft, hard) `Max open files` of a process, as /proc shows it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def test_the_soft_limit_is_raised_to_the_hard_limit_and_logged(medlb, backends):
    vip, port = free_ports(2)
    backends.start("pacs1", port)
    lb = medlb([service("pacs", vip, [server("pacs1", port)])], start=False)

    lb.start(open_files=(LIMIT, 2 * LIMIT))

    assert lb.proc is not None
    assert open_files(lb.proc.pid) == (2 * LIMIT, 2 * LIMIT)
    assert re.search(rf"open_files_limit from={LIMIT} to={2 * LIMIT}\b", lb.log()), lb.log()


def burst(port: int, count: int) -> list[socket.socket]:
    """`count` connects at once, none waiting for its answer: they queue in the
    listener's backlog, so medlb accepts as fast as it can."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect((LOOPBACK, port))
        except BlockingIOError:
            pass
        sockets.append(sock)
    return sockets


@pytest.mark.parametrize("workers", [1, 2])
def test_out_of_descriptors_the_control_plane_answers_and_no_server_is_blamed(medlb, backends, workers):
    vip, port = free_ports(2)
    backends.start("pacs1", port)
    lb = medlb([service("pacs", vip, [server("pacs1", port)])], start=False, workers=workers)
    lb.start(open_files=(LIMIT, LIMIT))
    lb.wait_health("pacs", "pacs1", "up", 10)
    checks = {"service": "pacs", "server": "pacs1"}
    assert metric(lb, "medlb_health_checks_total", **checks, result="failed") == 0

    clients = []
    served = closed_at_once = 0
    healthz = []
    deadline = time.monotonic() + 60
    try:
        for _ in range(CLIENTS):
            if time.monotonic() > deadline:
                break
            try:
                sock, name = connect(vip, timeout=2)
            except OSError:
                continue
            clients.append(sock)
            served += name == "pacs1"
            closed_at_once += name == ""
        # With every client still connected, more keep coming: each new connection
        # to the admin API is answered, and checks keep running and passing.
        ok_before = metric(lb, "medlb_health_checks_total", **checks, result="ok")
        for _ in range(10):
            pending = burst(vip, 200)
            try:
                healthz.append(httpx.get(f"{lb.base_url}/healthz", timeout=5).status_code)
            except httpx.HTTPError as exc:
                healthz.append(repr(exc))
            time.sleep(0.2)  # pacing only: let medlb work through the backlog
            for sock in pending:
                sock.close()
        wait_until(lambda: metric(lb, "medlb_health_checks_total", **checks, result="ok") >= ok_before + 3,
                   10, what="three more passing checks")

        assert healthz == [200] * 10
        assert metric(lb, "medlb_health_checks_total", **checks, result="failed") == 0
        assert lb.server("pacs", "pacs1")["health"] == "up"
        events = lb.api("GET", "/api/v1/events", params={"limit": 2000}).json()
        assert not [e for e in events if e["kind"] == "health" and e["new"] == "down"], events
        assert served > 0 and closed_at_once > 0
        refused = metric(lb, "medlb_service_descriptor_refused_connections_total", service="pacs")
        assert refused >= closed_at_once
        assert "connection_ceiling_reached" in lb.log()
    finally:
        for sock in clients:
            sock.close()

    # Once the clients are gone, new clients are served again.
    wait_until(lambda: who_answers(vip) == "pacs1", 15, what="a new client to be served")
    assert all(who_answers(vip) == "pacs1" for _ in range(20))


def test_a_ceiling_that_leaves_no_room_is_logged_at_start(medlb, backends):
    """A reserve as large as the limit: medlb still starts (its admin API answers), says
    why it serves no client, and refuses them."""
    vip, port = free_ports(2)
    backends.start("pacs1", port)
    lb = medlb([service("pacs", vip, [server("pacs1", port)])], start=False,
               limits={"descriptor_reserve": LIMIT})
    lb.start(open_files=(LIMIT, LIMIT))

    assert re.search(r"connection_ceiling\b.* ceiling=0\b", lb.log()), lb.log()
    assert who_answers(vip) == ""
    assert metric(lb, "medlb_service_descriptor_refused_connections_total", service="pacs") == 1


def test_an_advisory_is_logged_shown_and_answered_and_never_refuses_the_file(medlb, backends):
    """max_connections beyond what 256 descriptors hold: medlb runs, reloads and applies
    the file, and says so in the log and in the API's answers."""
    vip, port = free_ports(2)
    backends.start("pacs1", port)
    lb = medlb([service("pacs", vip, [server("pacs1", port)], limits={"max_connections": 200})], start=False)
    lb.start(open_files=(LIMIT, LIMIT))
    assert "config_advisory path=services" in lb.log() and "max_connections adds up to 200" in lb.log()

    text = lb.config_path.read_text().replace("max_connections: 200", "max_connections: 300")
    validated = lb.api("POST", "/api/v1/config/validate", json={"text": text}).json()
    applied = lb.api("POST", "/api/v1/config/apply", json={"text": text})
    running = lb.api("GET", "/api/v1/config").json()
    reloaded = lb.api("POST", "/api/v1/reload")

    assert validated["valid"] and validated["problems"] == []
    assert "max_connections adds up to 300 over all services" in validated["advisories"][0]
    assert applied.status_code == 200, applied.text
    assert "max_connections adds up to 300" in applied.json()["advisories"][0]
    assert running["config"]["services"][0]["limits"]["max_connections"] == 300
    assert "max_connections adds up to 300" in running["advisories"][0]
    assert reloaded.status_code == 200 and "adds up to 300" in reloaded.json()["advisories"][0]
    assert lb.log().count("max_connections adds up to 300") == 2  # the apply's reload and the reload
    assert who_answers(vip) == "pacs1"
