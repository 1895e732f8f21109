"""The pair's decision merge: for each decision the later change wins, the same on both
nodes; latches travel only from the active node; the digest says what is in force."""

from __future__ import annotations

import pytest

from medlb.ha.decisions import LATCH, SERVER, Decision, digest, from_wire, shared, to_take, to_wire

HALT = (SERVER, "pacs", "node1")
LATCHED = (LATCH, "pacs", "main")


def test_the_later_change_wins_and_the_older_is_not_taken():
    mine = {HALT: Decision("halt", 100.0, "alice")}
    theirs = {HALT: Decision("online", 200.0, "bob")}
    assert to_take(mine, theirs) == theirs
    assert to_take(theirs, mine) == {}


def test_a_decision_the_node_lacks_is_taken_and_one_it_has_is_not_taken_again():
    theirs = {HALT: Decision("halt", 100.0, "alice"), LATCHED: Decision("true", 90.0)}
    assert to_take({}, theirs) == theirs
    assert to_take(dict(theirs), theirs) == {}


def test_two_changes_at_the_same_instant_end_the_same_on_both_nodes():
    a = {HALT: Decision("drain", 100.0, "alice")}
    b = {HALT: Decision("halt", 100.0, "bob")}
    a_after = {**a, **to_take(a, b)}
    b_after = {**b, **to_take(b, a)}
    assert a_after == b_after == b


def test_both_nodes_converge_after_changing_different_decisions_while_apart():
    other = (SERVER, "pacs", "node2")
    a = {HALT: Decision("halt", 300.0, "alice"), other: Decision("online", 100.0, "alice")}
    b = {HALT: Decision("online", 200.0, "bob"), other: Decision("drain", 250.0, "bob")}
    a_after = {**a, **to_take(a, b)}
    b_after = {**b, **to_take(b, a)}
    assert a_after == b_after == {HALT: a[HALT], other: b[other]}


def test_latches_travel_only_from_the_active_node():
    decisions = {HALT: Decision("halt", 1.0, "alice"), LATCHED: Decision("true", 2.0)}
    assert shared(decisions, "MASTER") == decisions
    assert shared(decisions, "BACKUP") == {HALT: decisions[HALT]}
    assert shared(decisions, "UNKNOWN") == {HALT: decisions[HALT]}


def test_the_digest_is_what_is_in_force_not_when():
    assert digest({HALT: Decision("halt", 1.0, "a")}) == digest({HALT: Decision("halt", 2.0, "b")})
    assert digest({HALT: Decision("online", 1.0, "a"), LATCHED: Decision("false", 1.0)}) == digest({})
    assert digest({HALT: Decision("halt", 1.0)}) != digest({HALT: Decision("drain", 1.0)})
    assert digest({LATCHED: Decision("true", 1.0)}) != digest({})


def test_the_wire_form_round_trips_and_bad_rows_are_refused_by_index():
    decisions = {HALT: Decision("halt", 1.5, "alice"), LATCHED: Decision("true", 2.0)}
    assert from_wire(to_wire(decisions)) == decisions
    row = to_wire({HALT: decisions[HALT]})[0]
    for bad, said in (({**row, "value": "off"}, "decision 1: 'off' is not a server value"),
                      ({**row, "kind": "pool"}, "decision 1 is not a kind"),
                      ({**row, "changed_at": "now"}, "decision 1 is not a kind"),
                      ({**row, "changed_at": float("nan")}, "decision 1 is not a kind"),
                      ({**row, "kind": LATCH, "value": "halt"}, "decision 1: 'halt' is not a latch value")):
        with pytest.raises(ValueError, match=said):
            from_wire([row, bad])
    with pytest.raises(ValueError, match="must be a list"):
        from_wire({"decisions": []})


def test_the_store_keeps_an_online_decision_and_a_latch_set_again_keeps_its_time(tmp_path):
    from medlb.store import Store

    store = Store(tmp_path)
    store.save_server_state("pacs", "node1", "halt", "alice", changed_at=100.0)
    store.save_server_state("pacs", "node1", "online", "bob", changed_at=200.0)
    stored = store.server_states()[("pacs", "node1")]
    assert (stored.state, stored.changed_at, stored.changed_by) == ("online", 200.0, "bob")  # beats the halt

    store.save_failed_over("pacs", "main", True, changed_at=300.0)
    store.save_failed_over("pacs", "main", True)  # the runtime saying it again, e.g. after the peer's copy
    assert store.failover_latches() == {("pacs", "main"): (True, 300.0)}
    store.save_failed_over("pacs", "main", False)
    [(flag, at)] = store.failover_latches().values()
    assert flag is False and at > 300.0
    store.close()
