"""A dead server is routed around; the backup cluster takes over and gives back."""

from __future__ import annotations

import time
from collections import Counter

from helpers import free_ports, server, service, wait_until, who_answers
from medlb.config.units import parse_duration

CHECK = {"type": "tcp", "interval": "300ms", "timeout": "200ms", "rise": 2, "fall": 2}


def test_killed_server_is_marked_down_in_time_and_no_client_fails(medlb, backends):
    vip, *ports = free_ports(4)
    for name, port in zip("ABC", ports):
        backends.start(name, port)
    lb = medlb([service("pacs", vip, [server(n, p) for n, p in zip("ABC", ports)], health=CHECK)])
    lb.wait_health("pacs", "B", "up", 5)

    killed_at = time.time()
    backends.kill("B")
    # By design B is down interval * fall + timeout after the kill (0.8 s). The wait
    # allows ten times that: what is checked is the order of events (the kill, then
    # failed checks mark B down, then no client reaches B), not a shared machine's speed.
    detection = parse_duration(CHECK["interval"]) * CHECK["fall"] + parse_duration(CHECK["timeout"])
    took = lb.wait_health("pacs", "B", "down", 10 * detection)
    print(f"B marked down {took:.2f}s after it was killed (by design: interval*fall+timeout = {detection:.1f}s)")

    marked = lb.server("pacs", "B")
    assert marked["health_changed_at"] >= killed_at
    assert marked["health_reason"] == "connection refused"
    answers = Counter(who_answers(vip) for _ in range(100))
    assert answers == {"A": 50, "C": 50}


def test_connect_failure_before_detection_retries_the_next_server(medlb, backends):
    vip, *ports = free_ports(3)
    backends.start("A", ports[0])
    # B is configured but nothing listens there, and no check will notice.
    slow = {"type": "none"}
    lb = medlb([service("pacs", vip, [server("A", ports[0]), server("B", ports[1])], health=slow)])

    answers = Counter(who_answers(vip) for _ in range(20))

    assert answers == {"A": 20}
    assert lb.server("pacs", "B")["connect_failures"] >= 1


def test_all_primaries_down_sends_work_to_backup_and_auto_failback_returns(medlb, backends):
    vip, p1, p2, b1 = free_ports(4)
    backends.start("P1", p1)
    backends.start("P2", p2)
    backends.start("DR", b1)
    lb = medlb([service("vna", vip, [server("P1", p1), server("P2", p2)], backup=[server("DR", b1)],
                        health=CHECK, failback="auto")])
    assert {who_answers(vip) for _ in range(6)} == {"P1", "P2"}

    backends.kill("P1")
    backends.kill("P2")
    wait_until(lambda: lb.service("vna")["active_pool"] == "backup", 5, what="failover to backup")
    assert {who_answers(vip) for _ in range(6)} == {"DR"}

    backends.start("P1", p1)
    wait_until(lambda: lb.service("vna")["active_pool"] == "primary", 5, what="automatic failback")
    assert {who_answers(vip) for _ in range(6)} == {"P1"}


def test_manual_failback_stays_on_backup_until_the_operator_calls_failback(medlb, backends):
    vip, p1, b1 = free_ports(3)
    backends.start("P1", p1)
    backends.start("DR", b1)
    lb = medlb([service("vna", vip, [server("P1", p1)], backup=[server("DR", b1)],
                        health=CHECK, failback="manual")])

    backends.kill("P1")
    wait_until(lambda: lb.service("vna")["active_pool"] == "backup", 5, what="failover to backup")
    backends.start("P1", p1)
    lb.wait_health("vna", "P1", "up", 5)

    view = lb.service("vna")
    assert view["active_pool"] == "backup" and view["failed_over"] is True
    assert {who_answers(vip) for _ in range(6)} == {"DR"}

    response = lb.api("POST", "/api/v1/services/vna/failback")
    assert response.status_code == 200
    assert response.json()["service"]["active_pool"] == "primary"
    assert {who_answers(vip) for _ in range(6)} == {"P1"}
    audit = lb.api("GET", "/api/v1/audit").json()
    assert audit[0]["action"] == "failback" and audit[0]["who"] == "admin-token"


def test_manual_failover_survives_a_restart(medlb, backends):
    vip, p1, b1 = free_ports(3)
    backends.start("P1", p1)
    backends.start("DR", b1)
    lb = medlb([service("vna", vip, [server("P1", p1)], backup=[server("DR", b1)],
                        health=CHECK, failback="manual")])
    backends.kill("P1")
    wait_until(lambda: lb.service("vna")["active_pool"] == "backup", 5, what="failover to backup")
    backends.start("P1", p1)

    lb.stop()
    lb.start()

    lb.wait_health("vna", "P1", "up", 5)
    assert lb.service("vna")["active_pool"] == "backup"
    assert {who_answers(vip) for _ in range(4)} == {"DR"}


def test_nothing_available_closes_the_client_and_counts_it(medlb, backends):
    vip, p1 = free_ports(2)
    backends.start("P1", p1)
    lb = medlb([service("vna", vip, [server("P1", p1)], health=CHECK)])
    lb.set_state("vna", "P1", "halt")

    assert who_answers(vip) == ""
    view = lb.service("vna")
    assert view["active_pool"] == "none" and view["no_server"] == 1


def test_health_changes_are_counted_in_the_api_and_metrics(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start("A", pa)
    backends.start("B", pb)
    lb = medlb([service("pacs", vip, [server("A", pa), server("B", pb)], health=CHECK)])
    lb.wait_health("pacs", "B", "up", 5)

    backends.kill("B")
    lb.wait_health("pacs", "B", "down", 5)
    backends.start("B", pb)
    lb.wait_health("pacs", "B", "up", 5)

    assert lb.server("pacs", "B")["health_changes"] == 2
    metrics = lb.api("GET", "/metrics").text
    assert 'medlb_server_health_changes_total{backup="false",pool="default",server="B",service="pacs"} 2.0' in metrics
    events = [e for e in lb.api("GET", "/api/v1/events").json() if e["kind"] == "health"]
    assert [(e["subject"], e["new"]) for e in events[:2]] == [("B", "up"), ("B", "down")]
