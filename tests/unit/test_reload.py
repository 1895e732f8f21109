"""Runtime.load with a new config (SIGHUP / POST /reload): what stays and what changes."""

import pytest

from medlb.config import parse_config
from medlb.runtime import Failback, Runtime
from runtime_helpers import (
    SERVICE, check, config_text, make_runtime, pick, pick_many, reload, server, set_state, svc,
)


def names(runtime) -> set[str]:
    return {s.name for s in svc(runtime).servers()}


def test_halted_server_stays_halted():
    runtime = make_runtime({"a": 1, "b": 1})
    set_state(runtime, "b", "halt")
    reload(runtime, {"a": 1, "b": 1, "c": 1})
    assert server(runtime, "b").state == "halt"
    assert server(runtime, "b").state_changed_by == "alice"
    assert "b" not in pick_many(runtime, 30)


def test_servers_that_stay_keep_their_object_and_counters():
    runtime = make_runtime({"a": 1, "b": 1})
    a = server(runtime, "a")
    a.active, a.total, a.bytes_to_server = 3, 42, 1000
    reload(runtime, {"a": 1, "b": 1, "c": 1})
    assert server(runtime, "a") is a
    assert (a.active, a.total, a.bytes_to_server) == (3, 42, 1000)


def test_new_servers_are_added_and_take_work():
    runtime = make_runtime({"a": 1})
    reload(runtime, {"a": 1, "c": 1})
    assert names(runtime) == {"a", "c"}
    assert set(pick_many(runtime, 10)) == {"a", "c"}


def test_removed_servers_are_dropped():
    runtime = make_runtime({"a": 1, "b": 1})
    reload(runtime, {"b": 1})
    assert names(runtime) == {"b"}
    assert svc(runtime).server("a") is None
    assert set(pick_many(runtime, 10)) == {"b"}
    assert check(runtime, "a", ok=False) == []  # a late check result for it is ignored


def test_removed_then_re_added_server_starts_fresh():
    runtime = make_runtime({"a": 1, "b": 1})
    set_state(runtime, "b", "halt")
    reload(runtime, {"a": 1})
    reload(runtime, {"a": 1, "b": 1})
    assert server(runtime, "b").state == "online"


def test_health_is_kept_across_reload():
    runtime = make_runtime({"a": 1, "b": 1})
    check(runtime, "b", ok=False)
    reload(runtime, {"a": 1, "b": 1})
    assert server(runtime, "b").health == "down"
    assert set(pick_many(runtime, 10)) == {"a"}


def test_weight_change_takes_effect():
    runtime = make_runtime({"a": 1, "b": 1})
    reload(runtime, {"a": 1, "b": 3})
    assert server(runtime, "b").weight == 3
    counts = pick_many(runtime, 40)
    assert (counts.count("a"), counts.count("b")) == (10, 30)


def test_changed_address_keeps_operator_state_but_not_connections():
    runtime = make_runtime({"a": 1, "b": 1})
    b = server(runtime, "b")
    b.active = 5
    set_state(runtime, "b", "drain")
    new = parse_config(config_text({"a": 1, "b": 1}).replace("b.site.example", "b2.site.example")).config
    runtime.load(new)
    moved = server(runtime, "b")
    assert moved is not b and moved.host == "b2.site.example"
    assert moved.state == "drain"
    assert moved.active == 0


def test_server_moved_to_backup_becomes_a_backup():
    runtime = make_runtime({"a": 1, "b": 1})
    reload(runtime, {"a": 1}, {"b": 1})
    assert server(runtime, "b").backup is True
    assert set(pick_many(runtime, 10)) == {"a"}


def test_persistence_survives_reload():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1}, persistence="source-ip")
    stuck = pick(runtime, "192.0.2.7")
    reload(runtime, {"a": 1, "b": 1, "c": 1}, persistence="source-ip")
    assert pick_many(runtime, 5, "192.0.2.7") == [stuck] * 5


def test_service_counters_survive_reload():
    runtime = make_runtime({"a": 1})
    svc(runtime).total = 17
    reload(runtime, {"a": 1, "b": 1})
    assert svc(runtime).total == 17


def test_manual_failover_survives_reload():
    options = {"failback": "manual", "health": {"type": "tcp", "fall": 1, "rise": 1}}
    runtime = make_runtime({"a": 1}, {"dr": 1}, **options)
    check(runtime, "a", ok=False)
    check(runtime, "a", ok=True)
    assert svc(runtime).active_pool == "backup"
    reload(runtime, {"a": 1}, {"dr": 1}, **options)
    assert svc(runtime).active_pool == "backup"
    runtime.apply(Failback(SERVICE))
    assert svc(runtime).active_pool == "primary"


def test_switching_to_auto_failback_on_reload_returns_to_primary():
    options = {"health": {"type": "tcp", "fall": 1, "rise": 1}}
    runtime = make_runtime({"a": 1}, {"dr": 1}, failback="manual", **options)
    check(runtime, "a", ok=False)
    check(runtime, "a", ok=True)
    changes = reload(runtime, {"a": 1}, {"dr": 1}, failback="auto", **options)
    assert svc(runtime).active_pool == "primary"
    assert ("pool", "backup", "primary") in [(c.kind, c.old, c.new) for c in changes]


def test_removed_service_is_dropped():
    runtime = make_runtime({"a": 1})
    runtime.load(parse_config("services: []\n").config)
    assert runtime.services == {}


def test_reload_to_no_health_check_brings_down_servers_back():
    runtime = make_runtime({"a": 1, "b": 1})
    check(runtime, "b", ok=False)
    reload(runtime, {"a": 1, "b": 1}, health={"type": "none"})
    assert server(runtime, "b").health == "up"
    assert set(pick_many(runtime, 10)) == {"a", "b"}


# --- two phases: a plan writes nothing the running system reads; commit makes it live ---

FAST_CHECKS = {"health": {"type": "tcp", "fall": 1, "rise": 1}}


def on_backup_because_a_is_down() -> tuple[Runtime, list]:
    runtime = make_runtime({"a": 1}, {"dr": 1}, **FAST_CHECKS)
    check(runtime, "a", ok=False)
    assert svc(runtime).active_pool == "backup"
    published: list = []
    runtime.subscribe(published.extend)
    return runtime, published


def test_a_plan_changes_nothing_live_and_publishes_nothing():
    runtime, published = on_backup_because_a_is_down()
    a = server(runtime, "a")
    services = runtime.services

    plan = runtime.plan(parse_config(config_text({"a": 50, "c": 1}, {"dr": 1}, health={"type": "none"})).config)

    assert (a.weight, a.health, a.backup) == (1, "down", False)
    assert runtime.services is services and names(runtime) == {"a", "dr"}
    assert svc(runtime).active_pool == "backup" and pick_many(runtime, 4) == ["dr"] * 4
    assert published == []
    assert [(c.kind, c.old, c.new) for c in plan.changes] == [("pool", "backup", "primary")]
    assert plan.services[SERVICE].server("a") is a, "a kept server stays the live object"


def test_commit_makes_the_plan_live_and_publishes_its_changes():
    runtime, published = on_backup_because_a_is_down()
    a = server(runtime, "a")
    plan = runtime.plan(parse_config(config_text({"a": 50, "c": 1}, {"dr": 1}, health={"type": "none"})).config)

    changes = runtime.commit(plan)

    assert server(runtime, "a") is a and (a.weight, a.health) == (50, "up")
    assert svc(runtime).active_pool == "primary" and names(runtime) == {"a", "c", "dr"}
    assert published == changes == plan.changes


def test_commit_carries_over_what_operators_and_checks_did_after_the_plan():
    runtime = make_runtime({"a": 1, "b": 1}, **FAST_CHECKS)
    moved = parse_config(config_text({"a": 1, "b": 1, "c": 1}, **FAST_CHECKS).replace("b.site.example", "b2.example"))
    plan = runtime.plan(moved.config)
    set_state(runtime, "b", "drain")  # on the old b, while the data planes prepare
    check(runtime, "a", ok=False)

    runtime.commit(plan)

    assert server(runtime, "b").host == "b2.example" and server(runtime, "b").state == "drain"
    assert server(runtime, "a").health == "down"
    assert pick_many(runtime, 4) == ["c"] * 4


def test_only_a_plan_of_the_live_model_commits():
    runtime = make_runtime({"a": 1})
    first = runtime.plan(parse_config(config_text({"a": 1, "b": 1})).config)
    second = runtime.plan(parse_config(config_text({"a": 2})).config)
    runtime.commit(first)

    with pytest.raises(ValueError):
        runtime.commit(second)
    assert names(runtime) == {"a", "b"} and server(runtime, "a").weight == 1
