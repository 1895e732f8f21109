"""The runtime's decided state crosses between models only as a Snapshot (the control
process to its workers), and a server is found by name in one place."""

from __future__ import annotations

import pickle

import pytest

from medlb.runtime import Change, NotFound
from runtime_helpers import SERVICE, check, make_runtime, server, set_state, svc

PRIMARY = {"p1": 1, "p2": 1}
BACKUP = {"b1": 1}
OPTIONS = {"failback": "manual", "health": {"type": "tcp", "rise": 2, "fall": 1},
           "persistence": {"type": "source-ip"}}


def decided():
    """A control model after some decisions: an operator drained p1, p2 went down
    then came back, so the pool failed over to its backup and stays there (manual)."""
    control = make_runtime(PRIMARY, BACKUP, **OPTIONS)
    set_state(control, "p1", "drain")
    check(control, "p2", ok=False)
    check(control, "p1", ok=True)
    check(control, "b1", ok=True)
    return control


def test_a_model_of_the_same_config_adopts_another_ones_decisions():
    control = decided()
    replica = make_runtime(PRIMARY, BACKUP, **OPTIONS)

    replica.adopt(pickle.loads(pickle.dumps(control.snapshot())))  # as it travels to a worker

    assert replica.snapshot() == control.snapshot()
    p1, p2 = server(replica, "p1"), server(replica, "p2")
    assert (p1.state, p1.state_changed_by) == ("drain", "alice")
    assert (p2.health, p2.checked) == ("down", True)
    assert svc(replica).active_pool == "backup"
    assert svc(replica).pools["default"].failed_over
    assert svc(replica).pick("192.0.2.1").name == "b1"


def test_adopting_what_a_model_already_has_changes_nothing():
    control = decided()
    seen: list[Change] = []
    control.subscribe(seen.extend)

    assert control.adopt(control.snapshot()) == []
    assert seen == []


def test_adopt_publishes_what_changed_and_a_halt_has_its_side_effects():
    control = make_runtime(PRIMARY, BACKUP, **OPTIONS)
    replica = make_runtime(PRIMARY, BACKUP, **OPTIONS)
    chosen = svc(replica).pick("192.0.2.1")
    assert chosen is not None
    svc(replica).sticky.put(svc(replica).persistence_key("192.0.2.1"), chosen.name, 0.0)
    set_state(control, chosen.name, "halt")
    check(control, "b1", ok=False)
    seen: list[Change] = []
    replica.subscribe(seen.extend)

    replica.adopt(control.snapshot())

    assert {(c.kind, c.subject, c.new) for c in seen} >= {("state", chosen.name, "halt"), ("health", "b1", "down")}
    assert svc(replica).sticky.get(svc(replica).persistence_key("192.0.2.1"), now=1.0) is None  # halt forgets


def test_adopt_skips_servers_and_pools_the_model_does_not_have():
    control = make_runtime({"p1": 1, "gone": 1}, **OPTIONS)
    set_state(control, "gone", "halt")
    set_state(control, "p1", "drain")
    replica = make_runtime({"p1": 1}, **OPTIONS)

    replica.adopt(control.snapshot())

    assert server(replica, "p1").state == "drain"
    assert [s.name for s in svc(replica).servers()] == ["p1"]


def test_a_server_is_found_by_service_and_name_or_not_found_names_both():
    runtime = make_runtime(PRIMARY, BACKUP)

    assert runtime.server(SERVICE, "b1") is next(s for s in svc(runtime).servers() if s.name == "b1")
    with pytest.raises(NotFound, match="'svc' has no server named 'zz'"):
        runtime.server(SERVICE, "zz")
    with pytest.raises(NotFound, match="no service named 'nope'"):
        runtime.server("nope", "b1")
    assert issubclass(NotFound, KeyError)  # callers that catch KeyError keep working
