"""SIGHUP and POST /reload: changes take effect, connections stay, bad files are refused."""

from __future__ import annotations

import copy
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers import LOOPBACK, echo, connect, free_ports, server, service, wait_until, who_answers


def held_port() -> tuple[socket.socket, int]:
    """A port another program listens on."""
    holder = socket.socket()
    holder.bind((LOOPBACK, 0))
    holder.listen()
    return holder, holder.getsockname()[1]


def settings_view(lb, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What a reload may change in a service, without the counters that traffic moves."""
    view = lb.service(name)
    return {"listen": view["listen"], "active_pool": view["active_pool"], "health_check": view["health_check"],
            "servers": [{key: s[key] for key in ("name", "address", "pool", "backup", "weight", "state", "health")}
                        for s in view["servers"]]}


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
    assert any("services[0] (ris).listen[0] (line 3)" in p for p in problems), problems
    assert who_answers(vip) == "A"
    lb.signal(signal.SIGHUP)
    wait_until(lambda: "reload_refused" in lb.log(), 5, what="the SIGHUP reload to be refused")
    assert who_answers(vip) == "A"
    audit = lb.api("GET", "/api/v1/audit").json()
    assert audit[0]["action"] == "reload" and audit[0]["detail"]["result"] == "refused"
    lb.write_config(good)


def test_a_reload_that_points_a_server_at_medlb_itself_is_refused_and_changes_nothing(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa)
    lb = medlb([service("ris", vip, [server("A", pa)])])
    good, before = copy.deepcopy(lb.config), settings_view(lb, "ris")
    looped = copy.deepcopy(good)
    looped["services"][0]["servers"].append(server("self", vip))

    lb.write_config(looped)
    response = lb.api("POST", "/api/v1/reload")

    assert response.status_code == 422, response.text
    [problem] = response.json()["problems"]
    assert problem.startswith("services[0] (ris).servers[1] (self).address") and "own listen address" in problem
    lb.signal(signal.SIGHUP)
    wait_until(lambda: lb.log().count("reload_refused") == 2, 5, what="the SIGHUP reload to be refused")
    assert settings_view(lb, "ris") == before
    assert Counter(who_answers(vip) for _ in range(4)) == {"A": 4}
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


@pytest.mark.parametrize("refusal", ["address in use", "bad certificate"])
def test_a_refused_reload_changes_nothing_anywhere(medlb, backends, tmp_path: Path, refusal: str):
    vip, pa, pb, pc = free_ports(4)
    backends.start("B", pb)  # nothing answers for A: it is down and the pool runs on the backup
    lb = medlb([service("ris", vip, [server("A", pa)], backup=[server("B", pb)])])
    wait_until(lambda: lb.service("ris")["active_pool"] == "backup", 10, what="the pool on its backup")
    before, events = settings_view(lb, "ris"), lb.api("GET", "/api/v1/events").json()
    config = copy.deepcopy(lb.config)
    changed = config["services"][0]
    changed["health"] = {"type": "none"}  # would count A as up and bring the pool back to the primary
    changed["servers"][0]["weight"] = 50
    changed["servers"].append(server("C", pc))
    holder, busy = held_port()
    if refusal == "address in use":
        changed["listen"].append(f"{LOOPBACK}:{busy}")
        expected = "already in use"
    else:
        garbage = tmp_path / "garbage.pem"
        garbage.write_text("not a certificate\n")
        changed["tls"] = {"cert": str(garbage), "key": str(garbage)}
        expected = "garbage.pem"
    try:
        lb.write_config(config)
        response = lb.api("POST", "/api/v1/reload")
    finally:
        holder.close()

    assert response.status_code == 422, response.text
    assert expected in " ".join(response.json()["problems"])
    assert settings_view(lb, "ris") == before
    assert lb.api("GET", "/api/v1/events").json() == events, "no change was published"
    assert Counter(who_answers(vip) for _ in range(6)) == {"B": 6}
    assert lb.api("GET", "/api/v1/audit").json()[0]["detail"]["result"] == "refused"


def test_an_address_moving_to_another_service_keeps_serving_when_the_reload_is_refused(medlb, backends):
    moving, other, pa, pb = free_ports(4)
    backends.start("A", pa)
    backends.start("B", pb)
    lb = medlb([service("one", moving, [server("A", pa)]), service("two", other, [server("B", pb)])])
    holder, busy = held_port()
    config = copy.deepcopy(lb.config)
    config["services"][0]["listen"] = [f"{LOOPBACK}:{busy}"]
    config["services"][1]["listen"].append(f"{LOOPBACK}:{moving}")
    lb.write_config(config)
    try:
        response = lb.api("POST", "/api/v1/reload")

        assert response.status_code == 422, response.text
        assert Counter(who_answers(moving) for _ in range(6)) == {"A": 6}, "the moving address still serves one"
        assert lb.service("one")["listen"] == [f"{LOOPBACK}:{moving}"]
    finally:
        holder.close()

    held, name = connect(moving)
    assert name == "A"
    assert lb.api("POST", "/api/v1/reload").status_code == 200  # the port is free now: the move goes through
    assert Counter(who_answers(moving) for _ in range(6)) == {"B": 6}
    assert Counter(who_answers(busy) for _ in range(3)) == {"A": 3}
    assert echo(held) == b"ping\n", "a connection accepted before the move lives on"
    held.close()
