"""Operator state (online/drain/halt), health rise/fall, and the Change records."""

import pytest

from medlb.runtime import Change, Runtime, SetState
from runtime_helpers import SERVICE, check, clients, make_runtime, pick, pick_many, server, set_state, svc


def health(runtime, name) -> str:
    return server(runtime, name).health


# --- operator state ------------------------------------------------------------------


@pytest.mark.parametrize("state", ["drain", "halt"])
def test_drained_or_halted_server_gets_no_new_picks(state):
    runtime = make_runtime({"a": 1, "b": 1, "c": 1})
    set_state(runtime, "b", state)
    assert "b" not in pick_many(runtime, 30)
    assert not server(runtime, "b").available


@pytest.mark.parametrize("state", ["drain", "halt"])
def test_drained_or_halted_server_gets_no_new_source_hash_clients(state):
    runtime = make_runtime({"a": 1, "b": 1}, scheduler="source")
    set_state(runtime, "b", state)
    assert {pick(runtime, client) for client in clients(100)} == {"a"}


def test_server_back_online_takes_work_again():
    runtime = make_runtime({"a": 1, "b": 1})
    set_state(runtime, "b", "halt")
    set_state(runtime, "b", "online")
    assert set(pick_many(runtime, 4)) == {"a", "b"}


def persistent_runtime():
    return make_runtime({"a": 1, "b": 1, "c": 1}, persistence={"type": "source-ip", "timeout": "300s"})


def test_source_ip_persistence_keeps_a_client_on_its_server():
    runtime = persistent_runtime()
    first = pick(runtime, "192.0.2.7")
    assert pick_many(runtime, 10, "192.0.2.7") == [first] * 10


def test_drain_still_honours_persistence():
    runtime = persistent_runtime()
    stuck = pick(runtime, "192.0.2.7")
    set_state(runtime, stuck, "drain")
    assert pick(runtime, "192.0.2.7") == stuck
    assert stuck not in {pick(runtime, client) for client in clients(30)}  # new clients avoid it


def test_halt_breaks_persistence():
    runtime = persistent_runtime()
    stuck = pick(runtime, "192.0.2.7")
    set_state(runtime, stuck, "halt")
    moved = pick(runtime, "192.0.2.7")
    assert moved not in (stuck, None)
    set_state(runtime, stuck, "online")
    assert pick(runtime, "192.0.2.7") == moved  # the new stickiness holds


def test_persistence_does_not_send_a_client_to_a_down_server():
    runtime = persistent_runtime()
    stuck = pick(runtime, "192.0.2.7")
    check(runtime, stuck, ok=False)
    assert pick(runtime, "192.0.2.7") not in (stuck, None)


def test_unknown_state_is_refused():
    runtime = make_runtime({"a": 1})
    with pytest.raises(ValueError):
        set_state(runtime, "a", "paused")
    assert server(runtime, "a").state == "online"


def test_unknown_server_or_service_is_refused():
    runtime = make_runtime({"a": 1})
    with pytest.raises(KeyError):
        set_state(runtime, "nope", "halt")
    with pytest.raises(KeyError):
        runtime.apply(SetState("other", "a", "halt"))


def test_state_change_records_who_did_it():
    runtime = make_runtime({"a": 1, "b": 1})
    changes = set_state(runtime, "a", "drain")
    assert changes == [Change("state", SERVICE, "a", "online", "drain", who="alice")]
    assert server(runtime, "a").state_changed_by == "alice"


def test_setting_the_same_state_changes_nothing():
    runtime = make_runtime({"a": 1, "b": 1})
    set_state(runtime, "a", "drain")
    assert set_state(runtime, "a", "drain") == []


# --- health rise and fall ------------------------------------------------------------


def rise_fall_runtime():
    return make_runtime({"a": 1, "b": 1}, health={"type": "tcp", "rise": 2, "fall": 3})


def test_first_failed_check_takes_a_server_down_at_once():
    runtime = rise_fall_runtime()
    check(runtime, "a", ok=False)
    assert health(runtime, "a") == "down"


def test_after_a_good_first_check_fall_applies():
    runtime = rise_fall_runtime()
    check(runtime, "a", ok=True)
    assert health(runtime, "a") == "up"
    check(runtime, "a", ok=False, times=2)
    assert health(runtime, "a") == "up"  # the first result was ok; now fall=3 applies


def test_fall_failures_in_a_row_take_a_server_down():
    runtime = rise_fall_runtime()
    check(runtime, "a", ok=True)
    check(runtime, "a", ok=False, times=2)
    assert health(runtime, "a") == "up"
    check(runtime, "a", ok=False)
    assert health(runtime, "a") == "down"


def test_rise_successes_in_a_row_bring_a_server_up():
    runtime = rise_fall_runtime()
    check(runtime, "a", ok=False)
    check(runtime, "a", ok=True)
    assert health(runtime, "a") == "down"
    check(runtime, "a", ok=True)
    assert health(runtime, "a") == "up"


def test_interleaved_failures_do_not_take_a_server_down():
    runtime = rise_fall_runtime()
    check(runtime, "a", ok=True)
    for _ in range(10):
        check(runtime, "a", ok=False, times=2)
        check(runtime, "a", ok=True)
    assert health(runtime, "a") == "up"


def test_interleaved_successes_do_not_bring_a_server_up():
    runtime = rise_fall_runtime()
    check(runtime, "a", ok=False)
    for _ in range(10):
        check(runtime, "a", ok=True)
        check(runtime, "a", ok=False)
    assert health(runtime, "a") == "down"


def test_down_server_gets_no_picks_and_returns_after_rise():
    runtime = rise_fall_runtime()
    check(runtime, "b", ok=False)
    assert set(pick_many(runtime, 10)) == {"a"}
    check(runtime, "b", ok=True, times=2)
    assert set(pick_many(runtime, 10)) == {"a", "b"}


def test_check_result_for_a_server_that_left_is_ignored():
    runtime = rise_fall_runtime()
    assert check(runtime, "gone", ok=False) == []


def test_health_reason_and_counters_are_kept():
    runtime = rise_fall_runtime()
    check(runtime, "a", ok=False)
    check(runtime, "a", ok=True, times=3)
    a = server(runtime, "a")
    assert (a.checks_failed, a.checks_ok) == (1, 3)
    assert a.health_reason == "ok"
    assert a.last_check.ok is True


# --- Change records ------------------------------------------------------------------


def test_health_change_record():
    runtime = make_runtime({"a": 1, "b": 1})
    [change] = check(runtime, "a", ok=False)
    assert (change.kind, change.service, change.subject, change.old, change.new) == \
        ("health", SERVICE, "a", "up", "down")
    assert change.reason == "refused"


def test_no_change_record_when_health_stays():
    runtime = make_runtime({"a": 1, "b": 1})
    check(runtime, "a", ok=True)
    assert check(runtime, "a", ok=True) == []
    assert check(runtime, "a", ok=False) == []  # 1 of fall=3


def test_last_primary_going_down_records_the_pool_change():
    runtime = make_runtime({"a": 1}, {"dr": 1})
    changes = check(runtime, "a", ok=False)
    assert [(c.kind, c.subject, c.old, c.new) for c in changes] == [
        ("health", "a", "up", "down"),
        ("pool", "default", "primary", "backup"),
    ]


def test_draining_the_last_primary_records_state_and_pool_changes():
    runtime = make_runtime({"a": 1}, {"dr": 1})
    changes = set_state(runtime, "a", "drain")
    assert [(c.kind, c.subject, c.old, c.new) for c in changes] == [
        ("state", "a", "online", "drain"),
        ("pool", "default", "primary", "backup"),
    ]


def test_everything_down_records_pool_none():
    runtime = make_runtime({"a": 1})
    changes = check(runtime, "a", ok=False)
    assert changes[-1].kind == "pool" and (changes[-1].old, changes[-1].new) == ("primary", "none")


def test_subscribers_receive_the_changes():
    runtime = make_runtime({"a": 1, "b": 1})
    seen: list[list[Change]] = []
    runtime.subscribe(seen.append)
    set_state(runtime, "a", "halt")
    check(runtime, "b", ok=True)  # no change: not published
    assert [[c.kind for c in batch] for batch in seen] == [["state"]]


def test_change_records_serialise_to_plain_dicts():
    runtime = make_runtime({"a": 1, "b": 1})
    [change] = set_state(runtime, "a", "halt")
    assert change.as_dict() == {"kind": "state", "service": SERVICE, "subject": "a", "old": "online",
                                "new": "halt", "reason": "", "who": "alice", "detail": {}}


def test_runtime_starts_empty():
    assert Runtime().services == {}
    assert svc(make_runtime({"a": 1})).active_pool == "primary"
