"""Schedulers seen from real clients: weights, least connections, source hashing."""

from __future__ import annotations

from collections import Counter

import pytest

from helpers import connect, free_ports, server, service, wait_until, who_answers


def test_weighted_round_robin_spreads_1000_connections_1_2_3(medlb, backends):
    vip, *ports = free_ports(4)
    for name, port in zip("ABC", ports):
        backends.start(name, port)
    lb = medlb([service("vna", vip, [server(n, p, weight=w) for n, p, w in zip("ABC", ports, (1, 2, 3))])])

    counts = Counter(who_answers(vip) for _ in range(1000))

    assert set(counts) == {"A", "B", "C"}
    for name, weight in zip("ABC", (1, 2, 3)):
        expected = 1000 * weight / 6
        assert abs(counts[name] - expected) <= 0.05 * expected, counts
    totals = {s["name"]: s["total_connections"] for s in lb.service("vna")["servers"]}
    assert totals == dict(counts)


@pytest.mark.parametrize("workers", [1, 2])
def test_least_connections_keeps_long_lived_connections_level(medlb, backends, workers):
    """With 2 workers too: they share their open-connection counts, so leastconn
    levels the servers as one process would."""
    vip, *ports = free_ports(4)
    for name, port in zip("ABC", ports):
        backends.start(name, port)
    lb = medlb([service("hl7", vip, [server(n, p, weight=w) for n, p, w in zip("ABC", ports, (1, 1, 2))],
                       scheduler="leastconn")], workers=workers)

    held = [connect(vip) for _ in range(40)]
    try:
        by_server = Counter(name for _, name in held)
        load = {name: by_server[name] / weight for name, weight in zip("ABC", (1, 1, 2))}
        assert max(load.values()) - min(load.values()) <= 1, by_server
        # Close most of A's connections: the next ones go to A until it is level again.
        a_socks = [sock for sock, name in held if name == "A"]
        for sock in a_socks[:6]:
            sock.close()
        wait_until(lambda: lb.server("hl7", "A")["active_connections"] == by_server["A"] - 6, 10,
                   what="medlb to count A's six closed connections")
        again = [connect(vip) for _ in range(6)]
        held += again
        assert Counter(name for _, name in again) == {"A": 6}
        active = {s["name"]: s["active_connections"] for s in lb.service("hl7")["servers"]}
        assert active == {"A": by_server["A"], "B": by_server["B"], "C": by_server["C"]}
    finally:
        for sock, _ in held:
            sock.close()


def test_source_persistence_keeps_a_client_on_its_server(medlb, backends):
    vip, *ports = free_ports(4)
    for name, port in zip("ABC", ports):
        backends.start(name, port)
    medlb([service("pacs", vip, [server(n, p) for n, p in zip("ABC", ports)],
                   persistence={"type": "source-ip", "timeout": "5m"})])

    answers = {who_answers(vip) for _ in range(30)}

    assert len(answers) == 1
