"""SIGHUP and POST /reload: changes take effect, connections stay, bad files are refused."""

from __future__ import annotations

import signal

from helpers import echo, connect, free_ports, server, service, wait_until, who_answers


def test_connection_survives_a_sighup_that_adds_a_server_and_the_new_server_gets_work(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start("A", pa)
    backends.start("B", pb)
    lb = medlb([service("ris", vip, [server("A", pa)])])
    sock, name = connect(vip)
    assert name == "A"

    config = lb.config
    config["services"][0]["servers"].append(server("B", pb))
    lb.write_config(config)
    lb.signal(signal.SIGHUP)
    wait_until(lambda: len(lb.service("ris")["servers"]) == 2, 5, what="the reload to add B")

    assert echo(sock) == b"ping\n"
    assert {who_answers(vip) for _ in range(6)} == {"A", "B"}
    assert echo(sock, b"after\n") == b"after\n"
    sock.close()


def test_reload_adds_and_removes_services_and_listen_ports(medlb, backends):
    vip1, vip2, pa = free_ports(3)
    backends.start("A", pa)
    lb = medlb([service("one", vip1, [server("A", pa)])])
    held, _ = connect(vip1)

    lb.write_config({**lb.config, "services": [service("two", vip2, [server("A", pa)])]})
    response = lb.api("POST", "/api/v1/reload")

    assert response.status_code == 200 and response.json()["services"] == ["two"]
    assert who_answers(vip2) == "A"
    assert who_answers(vip1) == ""  # nothing listens there any more
    assert echo(held) == b"ping\n"  # but the established connection lives on
    held.close()


def test_invalid_file_is_refused_with_its_errors_and_the_old_config_keeps_running(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)])])
    good = lb.config

    lb.write_config("services:\n  - name: ris\n    listen: [127.0.0.1:notaport]\n    servers: []\n")
    response = lb.api("POST", "/api/v1/reload")

    assert response.status_code == 422
    problems = response.json()["problems"]
    assert any("services[0].listen[0] (line 3)" in p for p in problems), problems
    assert who_answers(vip) == "A"
    lb.signal(signal.SIGHUP)
    wait_until(lambda: "reload_refused" in lb.log(), 5, what="the SIGHUP reload to be refused")
    assert who_answers(vip) == "A"
    audit = lb.api("GET", "/api/v1/audit").json()
    assert audit[0]["action"] == "reload" and audit[0]["detail"]["result"] == "refused"
    lb.write_config(good)


def test_reload_keeps_a_halted_server_halted(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start("A", pa)
    backends.start("B", pb)
    lb = medlb([service("ris", vip, [server("A", pa), server("B", pb)])])
    lb.set_state("ris", "A", "halt")

    config = lb.config
    config["services"][0]["servers"][1]["weight"] = 5
    lb.write_config(config)
    assert lb.api("POST", "/api/v1/reload").status_code == 200

    assert lb.server("ris", "A")["state"] == "halt"
    assert {who_answers(vip) for _ in range(5)} == {"B"}


def test_connections_from_before_a_reload_are_counted_down_when_they_end(medlb, backends):
    vip, pa, pb = free_ports(3)
    backends.start("A", pa)
    backends.start("B", pb)
    lb = medlb([service("ris", vip, [server("A", pa)])])
    sock, _ = connect(vip)
    assert lb.service("ris")["active_connections"] == 1

    config = lb.config
    config["services"][0]["servers"].append(server("B", pb))
    lb.write_config(config)
    assert lb.api("POST", "/api/v1/reload").status_code == 200
    sock.close()

    wait_until(lambda: lb.service("ris")["active_connections"] == 0, 10,
               what="the service's active count to drop after the reload")
    assert lb.service("ris")["total_connections"] == 1
