"""Schedulers, driven through a Runtime built from a parsed config."""

from itertools import groupby

from runtime_helpers import clients, make_runtime, pick, pick_many, server, set_state, svc, tally


def longest_run(names) -> int:
    return max(len(list(group)) for _, group in groupby(names))


# --- roundrobin ----------------------------------------------------------------------


def test_roundrobin_follows_weights_exactly():
    runtime = make_runtime({"a": 1, "b": 2, "c": 3})
    assert tally(pick_many(runtime, 600)) == {"a": 100, "b": 200, "c": 300}


def test_roundrobin_is_exact_over_every_six_picks():
    runtime = make_runtime({"a": 1, "b": 2, "c": 3})
    names = pick_many(runtime, 60)
    for start in range(0, 60, 6):
        assert tally(names[start:start + 6]) == {"a": 1, "b": 2, "c": 3}


def test_roundrobin_interleaves_rather_than_bursts():
    runtime = make_runtime({"a": 1, "b": 2, "c": 3})
    assert longest_run(pick_many(runtime, 600)) <= 3


def test_roundrobin_heavy_server_is_spread_out():
    runtime = make_runtime({"a": 1, "b": 1, "c": 4})
    names = pick_many(runtime, 600)
    assert tally(names) == {"a": 100, "b": 100, "c": 400}
    assert longest_run(names) <= 3  # c,a,c,b,c,c rather than c,c,c,c,a,b


def test_roundrobin_equal_weights_alternate():
    runtime = make_runtime({"a": 1, "b": 1})
    names = pick_many(runtime, 10)
    assert longest_run(names) == 1
    assert tally(names) == {"a": 5, "b": 5}


def test_roundrobin_weight_zero_gets_nothing():
    runtime = make_runtime({"a": 1, "b": 0})
    assert set(pick_many(runtime, 20)) == {"a"}


def test_roundrobin_spreads_over_the_remaining_servers_when_one_is_halted():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1})
    set_state(runtime, "b", "halt")
    assert tally(pick_many(runtime, 100)) == {"a": 50, "c": 50}


# --- leastconn -----------------------------------------------------------------------


def test_leastconn_picks_the_least_loaded():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1}, scheduler="leastconn")
    server(runtime, "a").active = 5
    server(runtime, "b").active = 1
    server(runtime, "c").active = 3
    assert set(pick_many(runtime, 10)) == {"b"}


def test_leastconn_adjusts_for_weight():
    runtime = make_runtime({"small": 1, "big": 4}, scheduler="leastconn")
    server(runtime, "small").active = 1   # (1+1)/1 = 2
    server(runtime, "big").active = 4     # (4+1)/4 = 1.25
    assert pick(runtime) == "big"
    server(runtime, "big").active = 8     # (8+1)/4 = 2.25
    assert pick(runtime) == "small"


def test_leastconn_fills_up_by_weight_as_connections_open():
    runtime = make_runtime({"small": 1, "big": 3}, scheduler="leastconn")
    for _ in range(40):
        server(runtime, pick(runtime)).active += 1
    assert (server(runtime, "small").active, server(runtime, "big").active) == (10, 30)


def test_leastconn_shares_ties_evenly():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1}, scheduler="leastconn")
    assert tally(pick_many(runtime, 30)) == {"a": 10, "b": 10, "c": 10}


# --- source hash ---------------------------------------------------------------------


def test_source_hash_keeps_a_client_on_one_server():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1}, scheduler="source")
    for client in clients(50):
        assert len(set(pick_many(runtime, 5, client))) == 1


def test_source_hash_is_the_same_in_a_fresh_runtime():
    """Restarts and replicas in other workers must agree on each client's server."""
    first = make_runtime({"a": 1, "b": 1, "c": 1}, scheduler="source")
    second = make_runtime({"a": 1, "b": 1, "c": 1}, scheduler="source")
    assert [pick(first, c) for c in clients(200)] == [pick(second, c) for c in clients(200)]


def test_source_hash_spreads_clients_by_weight():
    runtime = make_runtime({"a": 1, "b": 1, "c": 2}, scheduler="source")
    counts = tally(pick(runtime, client) for client in clients(1000))
    assert set(counts) == {"a", "b", "c"}
    for name, expected in {"a": 250, "b": 250, "c": 500}.items():
        assert 0.8 * expected <= counts[name] <= 1.2 * expected, counts


def test_source_hash_moves_only_the_clients_of_a_halted_server():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1, "d": 1}, scheduler="source")
    before = {client: pick(runtime, client) for client in clients(1000)}
    set_state(runtime, "b", "halt")
    after = {client: pick(runtime, client) for client in clients(1000)}
    moved = {client for client in before if before[client] != after[client]}
    assert moved == {client for client, name in before.items() if name == "b"}
    assert "b" not in after.values()
    assert {after[client] for client in moved} == {"a", "c", "d"}


def test_source_hash_clients_return_when_the_server_comes_back():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1}, scheduler="source")
    before = {client: pick(runtime, client) for client in clients(300)}
    set_state(runtime, "b", "halt")
    set_state(runtime, "b", "online")
    assert {client: pick(runtime, client) for client in clients(300)} == before


# --- roundrobin over several workers --------------------------------------------------


def test_roundrobin_schedulers_sharing_a_cursor_rotate_as_one():
    """Two workers' schedulers drawing numbers from one counter, in any interleaving,
    pick exactly what one scheduler would: the rotation is over both together."""
    import itertools
    import random

    from medlb.runtime.schedulers import RoundRobin

    runtime = make_runtime({"a": 2, "b": 1, "c": 1})
    candidates = list(svc(runtime).servers())
    alone = RoundRobin()
    expected = [alone.pick(candidates).name for _ in range(400)]
    numbers = itertools.count()
    workers = [RoundRobin(lambda: next(numbers)) for _ in range(2)]
    turns = random.Random(7).choices([0, 1], weights=[3, 1], k=400)
    together = [workers[turn].pick(candidates).name for turn in turns]
    assert together == expected
    assert tally(together) == {"a": 200, "b": 100, "c": 100}


def test_roundrobin_across_workers_finds_its_place_again_after_the_candidates_change():
    import itertools

    from medlb.runtime.schedulers import RoundRobin

    runtime = make_runtime({"a": 1, "b": 1, "c": 1})
    everyone = list(svc(runtime).servers())
    numbers = itertools.count()
    first, second = RoundRobin(lambda: next(numbers)), RoundRobin(lambda: next(numbers))
    [first.pick(everyone) for _ in range(5)]
    [first.pick(everyone[:2]) for _ in range(3)]  # c halted for a while, seen by the first only
    picks = [(first if i % 2 else second).pick(everyone).name for i in range(9)]
    assert tally(picks) == {"a": 3, "b": 3, "c": 3}
