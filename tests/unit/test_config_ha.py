"""The `ha:` section of the clustered pair: the issue's example validates as written,
every rule that keeps the two nodes unambiguous has its own message on its own line,
and the section is a note (so `medlb run` refuses it) until the pair runs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from config_helpers import NODES, ha_config, only_problem

from medlb.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "ha.yaml").read_text()


def test_the_issue_example_validates_as_written():
    loaded = parse_config(EXAMPLE)

    ha = loaded.config.ha
    assert ha is not None
    assert [(n.name, str(n.address), n.priority) for n in ha.nodes] == [
        ("lb-a", "198.18.0.4", 150), ("lb-b", "198.18.0.5", 100)]
    assert (ha.interface, ha.virtual_router_id, ha.advert_interval, ha.preempt) == ("lb0", 51, 0.5, False)
    assert ha.vips == [ipaddress.IPv4Interface("198.18.0.100/24")]
    assert ha.sync_token_file == "/etc/medlb/ha-token"


def test_the_pair_runs_with_no_advisory_when_everything_its_services_keep_is_synced():
    loaded = parse_config(EXAMPLE)

    assert loaded.warnings == []
    assert [a for a in loaded.advisories if a.path == "ha"] == []


def test_the_pair_says_which_services_lose_what_at_a_failover():
    services = """\
services:
  - name: viewer
    mode: tcp
    listen: "198.18.0.100:8080"
    persistence: source-ip
    servers: [{name: a, address: "198.18.0.11:8080"}]
  - name: hl7
    mode: tcp
    listen: "198.18.0.100:2575"
    servers: [{name: a, address: "198.18.0.11:2575"}]
  - name: ris
    mode: l4-nat
    listen: "198.18.0.100:104"
    l4: {interface: eth0}
    servers: [{name: a, address: "198.18.0.11:104"}]
"""
    loaded = parse_config(ha_config() + services)

    [advisory] = [a for a in loaded.advisories if a.path == "ha"]
    assert "l4-nat connections are not carried (conntrackd is not run): clients of ris reconnect" \
        in advisory.message
    assert "viewer" not in advisory.message and "hl7" not in advisory.message


def test_source_ip_persistence_is_carried_so_it_needs_no_advisory():
    services = """\
services:
  - name: viewer
    mode: tcp
    listen: "198.18.0.100:8080"
    persistence: source-ip
    servers: [{name: a, address: "198.18.0.11:8080"}]
"""
    loaded = parse_config(ha_config() + services)

    assert [a for a in loaded.advisories if a.path == "ha"] == []


def test_defaults_advert_interval_one_second_and_no_preempt():
    ha = parse_config(ha_config(advert_interval="", preempt="")).config.ha

    assert ha is not None and ha.advert_interval == 1.0 and ha.preempt is False and ha.advert_centiseconds == 100


def test_a_config_without_ha_has_no_pair_and_no_note():
    loaded = parse_config("services: []\n")

    assert loaded.config.ha is None and loaded.warnings == []


@pytest.mark.parametrize("nodes, count", [
    ('    - {name: lb-a, address: "198.18.0.4", priority: 150}\n', 1),
    (NODES + '    - {name: lb-c, address: "198.18.0.6", priority: 50}\n', 3),
])
def test_exactly_two_nodes(nodes, count):
    problem = only_problem(ha_config(nodes))

    assert problem.path == "ha.nodes" and problem.line == 5
    assert problem.message == f"the pair has exactly two nodes in this release, not {count}"


@pytest.mark.parametrize("key, second, words", [
    ("name", '{name: lb-a, address: "198.18.0.5", priority: 100}', "the same name (lb-a)"),
    ("address", '{name: lb-b, address: "198.18.0.4", priority: 100}', "the same address (198.18.0.4)"),
    ("priority", '{name: lb-b, address: "198.18.0.5", priority: 150}', "the same priority (150)"),
])
def test_the_two_nodes_differ_in_name_address_and_priority(key, second, words):
    nodes = f'    - {{name: lb-a, address: "198.18.0.4", priority: 150}}\n    - {second}\n'

    problem = only_problem(ha_config(nodes))

    assert problem.path == f"ha.nodes[1].{key}" and problem.line == 7
    assert words in problem.message


@pytest.mark.parametrize("name", ["lb a", 'lb"a', "lb{a}", "../lb", "-lb", "lb#1", "a" * 33, "", "lb.a", "lb\na"])
def test_a_node_name_that_could_inject_into_keepalived_config_is_refused(name):
    nodes = NODES.replace("lb-a", name.replace("\n", "\\n").replace('"', '\\"'))
    nodes = nodes.replace("{name: ", '{name: "', 1).replace(", address", '", address', 1)

    problem = only_problem(ha_config(nodes))

    assert problem.path == "ha.nodes[0].name"
    assert "is not a node name: 1 to 32 letters, digits, '-' or '_'" in problem.message


@pytest.mark.parametrize("interface", ['"lb 0"', '"lb0;x"', '"a234567890123456"', '"lb0}"', '"-lb0"', '"lb/0"'])
def test_an_interface_that_is_not_a_plain_name_is_refused(interface):
    problem = only_problem(ha_config(interface=interface))

    assert problem.path == "ha.interface"
    assert "is not an interface name: 1 to 15 letters" in problem.message


def test_a_fifteen_character_interface_is_accepted():
    ha = parse_config(ha_config(interface="a23456789012345")).config.ha

    assert ha is not None and ha.interface == "a23456789012345"


@pytest.mark.parametrize("value, ok", [("0", False), ("1", True), ("255", True), ("256", False)])
def test_virtual_router_id_is_1_to_255(value, ok):
    text = ha_config(virtual_router_id=value)
    if ok:
        assert parse_config(text).config.ha.virtual_router_id == int(value)  # type: ignore[union-attr]
    else:
        assert only_problem(text).path == "ha.virtual_router_id"


@pytest.mark.parametrize("value, seconds", [("10ms", 0.01), ("70ms", 0.07), ("40950ms", 40.95), ("2s", 2.0),
                                            ("0.25", 0.25)])
def test_advert_interval_in_centiseconds_from_10ms_to_40_95s(value, seconds):
    ha = parse_config(ha_config(advert_interval=value)).config.ha

    assert ha is not None and ha.advert_interval == seconds and ha.advert_centiseconds == round(seconds * 100)


@pytest.mark.parametrize("value, words", [
    ("15ms", "a multiple of 10ms (VRRPv3 counts centiseconds); 15ms is not"),
    ("1005ms", "a multiple of 10ms (VRRPv3 counts centiseconds); 1005ms is not"),
    ("5ms", "from 10ms to 40.95s"),
    ("0s", "from 10ms to 40.95s"),
    ("40960ms", "from 10ms to 40.95s"),
    ("soon", "expected a duration"),
])
def test_advert_interval_refused_off_the_centisecond_grid_or_out_of_range(value, words):
    problem = only_problem(ha_config(advert_interval=value))

    assert problem.path == "ha.advert_interval" and problem.line == 10
    assert words in problem.message


@pytest.mark.parametrize("vips, path, words", [
    ('["198.18.0.100"]', "ha.vips[0]", "with its prefix length, such as 198.18.0.100/24"),
    ('["198.18.0.300/24"]', "ha.vips[0]", "is not an IPv4 address with a prefix length"),
    ('["2001:db8::1/64"]', "ha.vips[0]", "is not an IPv4 address with a prefix length"),
    ('["198.18.0.4/24"]', "ha.vips[0]", "198.18.0.4 is the address of nodes[0]; a VIP moves between the nodes"),
    ('["198.18.0.100/24", "198.18.0.100/32"]', "ha.vips[1]", "198.18.0.100 is already vips[0]"),
    ('["198.18.0.0/24"]', "ha.vips[0]", "the network address of 198.18.0.0/24"),
    ('["198.18.0.255/24"]', "ha.vips[0]", "the broadcast address of 198.18.0.0/24"),
    ('["127.0.0.10/8"]', "ha.vips[0]", "cannot be a VIP"),
    ('["224.0.0.18/32"]', "ha.vips[0]", "cannot be a VIP"),
    ("[]", "ha.vips", "at least one VIP"),
])
def test_vips_are_ipv4_host_addresses_with_a_prefix_and_no_node_address(vips, path, words):
    problem = only_problem(ha_config(vips=vips))

    assert problem.path == path
    assert words in problem.message


def test_at_most_twenty_vips():
    vips = "[" + ", ".join(f'"198.18.1.{i}/24"' for i in range(1, 22)) + "]"
    twenty = "[" + ", ".join(f'"198.18.1.{i}/24"' for i in range(1, 21)) + "]"

    assert len(parse_config(ha_config(vips=twenty)).config.ha.vips) == 20  # type: ignore[union-attr]
    problem = only_problem(ha_config(vips=vips))
    assert problem.path == "ha.vips" and "at most 20 VIPs" in problem.message


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "169.254.1.1", "not-an-ip"])
def test_a_node_address_is_an_ipv4_address_on_a_segment(address):
    problem = only_problem(ha_config(NODES.replace("198.18.0.5", address)))

    assert problem.path == "ha.nodes[1].address"


@pytest.mark.parametrize("priority, ok", [("0", False), ("1", True), ("254", True), ("255", False)])
def test_priority_is_1_to_254(priority, ok):
    text = ha_config(NODES.replace("priority: 100", f"priority: {priority}"))
    if ok:
        parse_config(text)
    else:
        assert only_problem(text).path == "ha.nodes[1].priority"


@pytest.mark.parametrize("key", ["interface", "virtual_router_id", "vips", "sync_token_file"])
def test_required_keys(key):
    problem = only_problem(ha_config(**{key: ""}))

    assert problem.path == f"ha.{key}" and problem.message == "this key is required"


def test_an_unknown_key_is_refused():
    problem = only_problem(ha_config(preemt="true"))

    assert problem.path == "ha.preemt"


def test_the_pair_needs_an_admin_api_the_peer_can_reach():
    missing = only_problem(ha_config(admin=""))
    loopback = only_problem(ha_config(admin='  listen: "127.0.0.1:9443"\n  token_file: /etc/medlb/token\n'))

    assert missing.path == "ha" and "the pair needs an admin: section" in missing.message
    assert loopback.path == "admin.listen" and loopback.line == 2
    assert "loopback only, but the peer node syncs over this admin API" in loopback.message


def test_the_pair_needs_https_on_the_admin_api():
    problem = only_problem(ha_config(admin='  listen: "0.0.0.0:9443"\n  token_file: /etc/medlb/token\n  tls: "off"\n'))

    assert problem.path == "admin.tls" and problem.line == 4
    assert "the pair syncs configs and decisions over HTTPS: admin.tls must not be off" in problem.message


@pytest.mark.parametrize("value, seconds", [("", 5.0), ("0s", 0.0), ("300s", 300.0), ("500ms", 0.5)])
def test_decisions_wait_defaults_to_5s_and_is_0_to_300s(value, seconds):
    ha = parse_config(ha_config(decisions_wait=value)).config.ha

    assert ha is not None and ha.decisions_wait == seconds


@pytest.mark.parametrize("value", ["301s", "-1s"])
def test_decisions_wait_past_its_bounds_is_refused_at_its_key(value):
    assert only_problem(ha_config(decisions_wait=value)).path == "ha.decisions_wait"


@pytest.mark.parametrize("value, seconds", [("", 2.0), ("500ms", 0.5), ("60s", 60.0)])
def test_persistence_sync_interval_defaults_to_2s_and_is_half_a_second_to_60s(value, seconds):
    ha = parse_config(ha_config(persistence_sync_interval=value)).config.ha

    assert ha is not None and ha.persistence_sync_interval == seconds


@pytest.mark.parametrize("value", ["499ms", "61s"])
def test_persistence_sync_interval_past_its_bounds_is_refused_at_its_key(value):
    assert only_problem(ha_config(persistence_sync_interval=value)).path == "ha.persistence_sync_interval"


@pytest.mark.parametrize("key, value, seconds", [
    ("peer_check_interval", "", 1.0), ("peer_check_interval", "200ms", 0.2), ("peer_check_interval", "60s", 60.0),
    ("peer_timeout", "", 5.0), ("peer_timeout", "200ms", 0.2), ("peer_timeout", "60s", 60.0),
    ("config_sync_timeout", "", 30.0), ("config_sync_timeout", "1s", 1.0), ("config_sync_timeout", "10m", 600.0),
])
def test_the_sync_timings_default_to_1s_5s_30s_and_take_their_bounds(key, value, seconds):
    ha = parse_config(ha_config(**{key: value})).config.ha

    assert ha is not None and getattr(ha, key) == seconds


@pytest.mark.parametrize("key, value, message", [
    ("peer_check_interval", "199ms", "peer_check_interval is a duration from 200ms to 1m, not 199ms"),
    ("peer_check_interval", "61s", "peer_check_interval is a duration from 200ms to 1m, not 61s"),
    ("peer_timeout", "100ms", "peer_timeout is a duration from 200ms to 1m, not 100ms"),
    ("peer_timeout", "2m", "peer_timeout is a duration from 200ms to 1m, not 2m"),
    ("config_sync_timeout", "999ms", "config_sync_timeout is a duration from 1s to 10m, not 999ms"),
    ("config_sync_timeout", "601s", "config_sync_timeout is a duration from 1s to 10m, not 601s"),
])
def test_the_sync_timings_past_their_bounds_are_refused_at_their_key(key, value, message):
    problem = only_problem(ha_config(**{key: value}))

    assert problem.path == f"ha.{key}" and problem.message == message
