"""Source-IP persistence: the bounded stick table and how client addresses are grouped."""

import pytest

from medlb.runtime.persistence import (StickTable, client_key, export_tables, from_wire, load_tables, merge,
                                       to_wire)
from runtime_helpers import clients, make_runtime, pick, svc

KEY_A, KEY_B, KEY_C = b"client-a", b"client-b", b"client-c"


# --- StickTable ----------------------------------------------------------------------


def test_entry_is_kept_until_its_timeout():
    table = StickTable(timeout=300, max_entries=10)
    table.put(KEY_A, "vna1", now=1000)
    assert table.get(KEY_A, now=1299) == "vna1"
    assert table.get(KEY_A, now=1301) is None
    assert len(table) == 0  # an expired entry is removed when found


def test_put_refreshes_the_timeout():
    table = StickTable(timeout=300, max_entries=10)
    table.put(KEY_A, "vna1", now=1000)
    table.put(KEY_A, "vna1", now=1200)
    assert table.get(KEY_A, now=1450) == "vna1"


def test_expire_drops_only_expired_entries():
    table = StickTable(timeout=100, max_entries=10)
    table.put(KEY_A, "vna1", now=0)
    table.put(KEY_B, "vna2", now=50)
    table.put(KEY_A, "vna1", now=80)  # refreshed out of insertion order
    table.put(KEY_C, "vna2", now=10)
    table.expire(now=120)
    assert len(table) == 2
    assert table.get(KEY_A, now=120) == "vna1" and table.get(KEY_B, now=120) == "vna2"


def test_table_never_holds_more_than_max_entries():
    table = StickTable(timeout=300, max_entries=100)
    for index in range(1000):
        table.put(str(index).encode(), "vna1", now=0)
    assert len(table) == 100
    assert table.evictions == 900


def test_least_recently_used_entry_is_evicted_first():
    table = StickTable(timeout=300, max_entries=2)
    table.put(KEY_A, "vna1", now=0)
    table.put(KEY_B, "vna2", now=1)
    table.put(KEY_A, "vna1", now=2)  # A used again: B is now the oldest
    table.put(KEY_C, "vna1", now=3)
    assert table.get(KEY_A, now=4) == "vna1"
    assert table.get(KEY_B, now=4) is None
    assert table.get(KEY_C, now=4) == "vna1"


def test_forget_server_drops_only_its_clients():
    table = StickTable(timeout=300, max_entries=10)
    table.put(KEY_A, "vna1", now=0)
    table.put(KEY_B, "vna2", now=0)
    table.put(KEY_C, "vna1", now=0)
    table.forget_server("vna1")
    assert len(table) == 1
    assert table.get(KEY_B, now=1) == "vna2"


# --- client_key ----------------------------------------------------------------------


def test_each_ipv4_address_is_its_own_key_by_default():
    assert client_key("10.1.2.3") != client_key("10.1.2.4")
    assert client_key("10.1.2.3") == client_key("10.1.2.3")


def test_ipv4_prefix_groups_a_subnet():
    assert client_key("10.1.2.3", ipv4_prefix=24) == client_key("10.1.2.250", ipv4_prefix=24)
    assert client_key("10.1.2.3", ipv4_prefix=24) != client_key("10.1.3.3", ipv4_prefix=24)


def test_ipv6_prefix_groups_a_subnet():
    assert client_key("2001:db8:0:1::5", ipv6_prefix=64) == client_key("2001:db8:0:1::9", ipv6_prefix=64)
    assert client_key("2001:db8:0:1::5", ipv6_prefix=64) != client_key("2001:db8:0:2::5", ipv6_prefix=64)
    assert client_key("2001:db8:0:1::5") != client_key("2001:db8:0:1::9")


def test_ipv4_prefix_does_not_group_ipv6_clients():
    assert client_key("2001:db8::1", ipv4_prefix=0) != client_key("2001:db8::2", ipv4_prefix=0)


def test_same_network_with_different_prefixes_is_a_different_key():
    assert client_key("10.0.0.0", ipv4_prefix=8) != client_key("10.0.0.0", ipv4_prefix=16)


# --- through the runtime -------------------------------------------------------------


def test_clients_of_one_subnet_share_a_server():
    runtime = make_runtime({"a": 1, "b": 1, "c": 1},
                           persistence={"type": "source-ip", "ipv4_prefix": 24})
    first = pick(runtime, "10.20.30.1")
    assert {pick(runtime, f"10.20.30.{host}") for host in range(2, 60)} == {first}


def test_persistence_ends_after_the_timeout():
    runtime = make_runtime({"a": 1, "b": 1}, persistence={"type": "source-ip", "timeout": "10s"})
    service = svc(runtime)
    key = service.persistence_key("192.0.2.7")
    chosen = service.pick("192.0.2.7", now=100.0)
    assert service.sticky.get(key, now=109.0) == chosen.name
    assert service.sticky.get(key, now=111.0) is None


def test_each_sticky_pick_refreshes_the_timeout():
    runtime = make_runtime({"a": 1, "b": 1}, persistence={"type": "source-ip", "timeout": "10s"})
    service = svc(runtime)
    chosen = service.pick("192.0.2.7", now=100.0)
    for now in (108.0, 116.0, 124.0):
        assert service.pick("192.0.2.7", now=now) is chosen


def test_persistence_table_is_bounded_by_max_entries():
    runtime = make_runtime({"a": 1, "b": 1}, persistence={"type": "source-ip", "max_entries": 50})
    for client in clients(500):
        pick(runtime, client)
    assert len(svc(runtime).sticky) == 50


def test_no_persistence_means_no_table():
    runtime = make_runtime({"a": 1, "b": 1})
    assert svc(runtime).sticky is None
    assert {pick(runtime, "192.0.2.7") for _ in range(4)} == {"a", "b"}


# --- copying the tables to the pair's peer (medlb/ha/sticky.py) --------------------------


def test_a_client_placed_on_one_node_goes_to_the_same_server_on_the_other():
    """Each node its own monotonic clock: what travels is the time left, not an instant."""
    active = make_runtime({"a": 1, "b": 1, "c": 1}, persistence={"type": "source-ip", "timeout": "300s"})
    passive = make_runtime({"a": 1, "b": 1, "c": 1}, persistence={"type": "source-ip", "timeout": "300s"})
    placed = {client: svc(active).pick(client, now=1000.0).name for client in clients(30)}

    sent = to_wire(export_tables(active.services, now=1100.0))
    taken = load_tables(passive.services, from_wire(sent), now=50.0)

    assert taken == 30
    assert {left for _, _, left in svc(passive).sticky.export(now=50.0)} == {200.0}  # as left when sent
    assert {client: svc(passive).pick(client, now=51.0).name for client in clients(30)} == placed


def test_expired_entries_do_not_travel():
    table = StickTable(timeout=100, max_entries=10)
    table.put(KEY_A, "vna1", now=0)
    table.put(KEY_B, "vna2", now=50)
    assert table.export(now=120) == [(KEY_B, "vna2", 30)]


def test_the_peer_keeps_at_most_max_entries_the_freshest():
    table = StickTable(timeout=300, max_entries=2)
    taken = table.load([(KEY_A, "vna1", 10.0), (KEY_B, "vna2", 200.0), (KEY_C, "vna1", 100.0)], now=0)
    assert taken == 2 and len(table) == 2 and table.evictions == 0
    assert table.get(KEY_A, now=1) is None and table.get(KEY_B, now=1) == "vna2" and table.get(KEY_C, now=1) == "vna1"


def test_time_left_is_capped_at_the_peers_timeout():
    table = StickTable(timeout=60, max_entries=10)
    table.load([(KEY_A, "vna1", 3600.0)], now=0)
    assert table.get(KEY_A, now=59) == "vna1" and table.get(KEY_A, now=61) is None


def test_entries_for_servers_or_services_the_peer_does_not_have_are_dropped():
    passive = make_runtime({"a": 1, "b": 1}, persistence={"type": "source-ip"})
    taken = load_tables(passive.services, {"svc": [(KEY_A, "gone", 100.0), (KEY_B, "a", 100.0)],
                                           "other": [(KEY_C, "a", 100.0)]}, now=0)
    assert taken == 1 and len(svc(passive).sticky) == 1


def test_a_service_without_persistence_takes_nothing():
    passive = make_runtime({"a": 1, "b": 1})
    assert load_tables(passive.services, {"svc": [(KEY_A, "a", 100.0)]}, now=0) == 0


def test_workers_tables_merge_keeping_the_most_time_left():
    merged = merge([{"svc": [(KEY_A, "a", 10.0), (KEY_B, "b", 5.0)]}, {"svc": [(KEY_A, "b", 50.0)]}, {}])
    assert sorted(merged["svc"]) == [(KEY_A, "b", 50.0), (KEY_B, "b", 5.0)]


@pytest.mark.parametrize("body", [[], {"svc": "x"}, {"svc": [["zz", "a", 1]]}, {"svc": [["00", 1, 1]]},
                                  {"svc": [["00", "a", "nan"]]}, {"svc": [["00", "a", True]]},
                                  {"svc": [["00", "a"]]}])
def test_what_is_not_a_set_of_entries_is_refused(body):
    with pytest.raises(ValueError):
        from_wire(body)
