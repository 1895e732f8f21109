"""halt and drain as an operator uses them, and halt surviving a restart."""

from __future__ import annotations

from collections import Counter

from helpers import connect, echo, free_ports, server, service, wait_until, who_answers


def test_halted_server_gets_no_new_connections_and_stays_halted_after_restart(medlb, backends):
    vip, *ports = free_ports(3)
    backends.start("A", ports[0])
    backends.start("B", ports[1])
    lb = medlb([service("pacs", vip, [server("A", ports[0]), server("B", ports[1])])])

    response = lb.set_state("pacs", "A", "halt")
    assert response.status_code == 200 and response.json()["server"]["state"] == "halt"
    assert Counter(who_answers(vip) for _ in range(20)) == {"B": 20}

    lb.stop()
    lb.start()

    assert lb.server("pacs", "A")["state"] == "halt"
    assert Counter(who_answers(vip) for _ in range(20)) == {"B": 20}
    lb.set_state("pacs", "A", "online")
    assert "A" in {who_answers(vip) for _ in range(4)}


def test_halt_also_refuses_persistent_clients_but_drain_keeps_them(medlb, backends):
    vip, *ports = free_ports(3)
    backends.start("A", ports[0])
    backends.start("B", ports[1])
    lb = medlb([service("pacs", vip, [server("A", ports[0]), server("B", ports[1])],
                        persistence={"type": "source-ip", "timeout": "5m"})])
    home = who_answers(vip)
    other = "B" if home == "A" else "A"

    lb.set_state("pacs", home, "drain")
    assert {who_answers(vip) for _ in range(5)} == {home}

    lb.set_state("pacs", home, "halt")
    assert {who_answers(vip) for _ in range(5)} == {other}


def test_drained_server_keeps_its_established_connection_and_gets_no_new_ones(medlb, backends):
    vip, *ports = free_ports(3)
    backends.start("A", ports[0])
    backends.start("B", ports[1])
    lb = medlb([service("pacs", vip, [server("A", ports[0]), server("B", ports[1])])])
    sock, name = connect(vip)
    other = "B" if name == "A" else "A"

    lb.set_state("pacs", name, "drain")

    assert echo(sock) == b"ping\n"
    assert {who_answers(vip) for _ in range(10)} == {other}
    assert echo(sock, b"still here\n") == b"still here\n"
    assert lb.server("pacs", name)["active_connections"] == 1
    sock.close()
    wait_until(lambda: lb.server("pacs", name)["active_connections"] == 0, 5, what="the drained connection to end")


def test_halt_keeps_established_connections_by_default(medlb, backends):
    vip, *ports = free_ports(3)
    backends.start("A", ports[0])
    lb = medlb([service("pacs", vip, [server("A", ports[0])])])
    sock, _ = connect(vip)

    lb.set_state("pacs", "A", "halt")

    assert echo(sock) == b"ping\n"
    sock.close()


def test_halt_with_on_halt_close_cuts_established_connections(medlb, backends):
    vip, *ports = free_ports(3)
    backends.start("A", ports[0])
    backends.start("B", ports[1])
    lb = medlb([service("pacs", vip, [server("A", ports[0]), server("B", ports[1])], on_halt="close")])
    sock, name = connect(vip)

    lb.set_state("pacs", name, "halt")

    sock.settimeout(5)
    try:
        cut = echo(sock) == b""
    except ConnectionError:
        cut = True
    assert cut
    assert lb.server("pacs", name)["active_connections"] == 0


def test_state_change_is_audited_with_who_and_what(medlb, backends):
    vip, port = free_ports(2)
    backends.start("A", port)
    lb = medlb([service("pacs", vip, [server("A", port)])])

    lb.set_state("pacs", "A", "drain")

    entry = lb.api("GET", "/api/v1/audit").json()[0]
    assert (entry["who"], entry["action"], entry["target"]) == ("admin-token", "set_state", "pacs/A")
    assert entry["detail"] == {"from": "online", "to": "drain"}
