"""Each server's one status in words: what the scheduler does with it now."""

from medlb.config import parse_config
from medlb.runtime import Runtime
from medlb.runtime.status import server_status, service_counts
from runtime_helpers import check, make_runtime, server, set_state, svc


def statuses(runtime) -> dict[str, str]:
    service = svc(runtime)
    return {s.name: server_status(service, s)[1] for s in service.servers()}


def manual():
    return make_runtime({"p1": 1, "p2": 1}, {"b1": 1}, failback="manual",
                        health={"type": "tcp", "rise": 1, "fall": 1})


def test_an_idle_backup_is_standby_and_a_healthy_service_counts_nothing_out():
    runtime = manual()
    assert statuses(runtime) == {"p1": "takes work", "p2": "takes work", "b1": "standby (backup cluster)"}
    assert service_counts(svc(runtime)) == {"taking_work": 2, "standby": 1, "out": 0}


def test_primaries_back_while_waiting_for_a_manual_failback_are_ready_not_taking_work():
    runtime = manual()
    check(runtime, "p1", ok=False)
    check(runtime, "p2", ok=False)
    check(runtime, "p1", ok=True)
    assert statuses(runtime) == {"p1": "ready: waiting for failback", "p2": "down: refused", "b1": "takes work"}
    assert service_counts(svc(runtime)) == {"taking_work": 1, "standby": 1, "out": 1}


def test_draining_counts_the_connections_left_and_halted_and_down_say_so():
    runtime = manual()
    set_state(runtime, "p1", "drain")
    server(runtime, "p1").active = 3
    set_state(runtime, "p2", "halt")
    assert statuses(runtime)["p1"] == "draining (3 connections left)"
    assert server_status(svc(runtime), server(runtime, "p2")) == ("halted", "halted")
    assert statuses(runtime)["b1"] == "takes work"


def test_a_layer_4_service_drains_without_a_count():
    runtime = Runtime()
    runtime.load(parse_config(
        "services:\n"
        "  - {name: svc, mode: l4-nat, listen: ['198.18.0.100:104'], l4: {interface: eth0},\n"
        "     health: {type: tcp}, servers: [{name: p1, address: 198.18.0.11}]}\n").config)
    set_state(runtime, "p1", "drain")
    assert statuses(runtime)["p1"] == "draining"
