"""What a host must have for the kernel layer 4 services: the decisions of
medlb.kernel.host on plain facts, and one real read of this host."""

from __future__ import annotations

import ipaddress
import os
import textwrap

import pytest

from medlb.config import parse_config
from medlb.kernel import host
from medlb.kernel.host import HostFacts, HostProblem, host_problems, problems_for, read_host

LB0 = (ipaddress.IPv4Interface("198.18.0.10/24"),)


def facts(interfaces=None, **changes) -> HostFacts:
    """A host that has everything: root, nft, conntrack, lb0 on 198.18.0.0/24."""
    base = dict(uid=0, net_admin=True, nft="/usr/sbin/nft", conntrack="/usr/sbin/conntrack",
                interfaces={"lo": (ipaddress.IPv4Interface("127.0.0.1/8"),), "lb0": LB0}
                if interfaces is None else interfaces)
    base.update(changes)
    return HostFacts(**base)


def config(mode: str = "l4-dr", servers: tuple[str, ...] = ("198.18.0.11", "198.18.0.12"),
           backup: tuple[str, ...] = (), l4: str = "{interface: lb0}", extra: str = ""):
    """A layer 7 service, then an L4 service `pacs` (services[1]) with servers pacs1..
    and backup servers dr1.. at these addresses."""
    def listing(addresses: tuple[str, ...], prefix: str) -> str:
        return "[" + ", ".join(f"{{name: {prefix}{i}, address: {a}}}" for i, a in enumerate(addresses, 1)) + "]"

    text = textwrap.dedent(f"""\
        services:
          - name: tcp-front
            listen: ["127.0.0.1:2104"]
            servers: [{{name: t1, address: "127.0.0.1:3104"}}]
          - name: pacs
            mode: {mode}
            listen: ["198.18.0.100:104"]
            l4: {l4}
            servers: {listing(servers, "pacs")}
            backup: {listing(backup, "dr")}
        """) + extra
    return parse_config(text).config


def only(found: list[HostProblem]) -> HostProblem:
    assert len(found) == 1, found
    return found[0]


def test_a_config_without_l4_services_asks_nothing_of_the_host(monkeypatch):
    def no_reading():
        raise AssertionError("the host was read")

    monkeypatch.setattr(host, "read_host", no_reading)
    plain = parse_config('services: [{name: a, listen: "127.0.0.1:2104", servers: [{name: s, address: "127.0.0.1:1"}]}]')
    assert host_problems(plain.config) == []


def test_a_host_with_everything_has_no_problem():
    assert problems_for(config(), facts()) == []


def test_not_root_is_refused_at_the_first_l4_service():
    problem = only(problems_for(config(), facts(uid=65534, net_admin=False)))
    assert problem.level == "error" and problem.service is None
    assert problem.path_key == ("services", 1, "mode")
    assert problem.message == ("mode l4-dr needs root (CAP_NET_ADMIN) to program nftables; "
                               "this process runs as uid 65534 without it")


def test_without_nft_is_refused():
    problem = only(problems_for(config(mode="l4-nat", l4="{interface: lb0, source_nat: true}"), facts(nft=None)))
    assert problem.message.startswith("nft is not installed (Debian package nftables)")


@pytest.mark.parametrize(("mode", "on_halt", "refused"), [
    ("l4-nat", "close", True), ("l4-nat", "keep", False), ("l4-dr", "close", False),
])
def test_nat_on_halt_close_needs_conntrack(mode, on_halt, refused):
    l4 = "{interface: lb0, source_nat: true}" if mode == "l4-nat" else "{interface: lb0}"
    found = problems_for(config(mode=mode, l4=l4, extra=f"    on_halt: {on_halt}\n"), facts(conntrack=None))
    if refused:
        problem = only(found)
        assert problem.path_key == ("services", 1, "on_halt")
        assert "conntrack, which is not installed (Debian package conntrack)" in problem.message
    else:
        assert found == []


def test_a_missing_interface_is_refused_naming_those_there_are():
    problem = only(problems_for(config(l4="{interface: bond0}"), facts()))
    assert problem.path_key == ("services", 1, "l4", "interface")
    assert problem.message == "interface bond0 does not exist on this host (it has lb0, lo)"


def test_a_dr_server_on_a_foreign_subnet_is_refused():
    found = problems_for(config(servers=("198.18.0.11", "198.18.5.11"), backup=("198.18.0.21", "10.1.0.5")),
                         facts())
    assert [(p.path_key, p.message) for p in found] == [
        (("services", 1, "servers", 1, "address"),
         "server pacs2 198.18.5.11 is not on a subnet of lb0 (198.18.0.10/24): Direct Routing sends frames, "
         "so servers must be on the same segment"),
        (("services", 1, "backup", 1, "address"),
         "server dr2 10.1.0.5 is not on a subnet of lb0 (198.18.0.10/24): Direct Routing sends frames, "
         "so servers must be on the same segment"),
    ]


def test_a_dr_server_on_any_subnet_of_the_interface_is_accepted():
    two = {"lb0": (*LB0, ipaddress.IPv4Interface("198.18.5.1/24"))}
    assert problems_for(config(servers=("198.18.0.11", "198.18.5.11")), facts(two)) == []


def test_a_dr_server_on_a_subnet_of_another_interface_is_refused():
    other = {"lb0": LB0, "eth1": (ipaddress.IPv4Interface("198.18.5.1/24"),)}
    problem = only(problems_for(config(servers=("198.18.5.11",)), facts(other)))
    assert "not on a subnet of lb0" in problem.message


def test_dr_on_an_interface_without_an_address_is_refused():
    problem = only(problems_for(config(servers=("198.18.0.11",)), facts({"lb0": ()})))
    assert "(no IPv4 address)" in problem.message


def test_unreadable_addresses_are_an_advisory_not_a_guess():
    problem = only(problems_for(config(), facts({"lb0": ()}, addresses_unknown="`ip -j addr show` failed")))
    assert problem.level == "advisory"
    assert "nobody checked that the servers are on its segment" in problem.message


def test_nat_without_source_nat_advises_the_route_back_through_the_servers_side():
    behind = {"lb0": (*LB0, ipaddress.IPv4Interface("198.18.0.100/32")),
              "eth1": (ipaddress.IPv4Interface("198.19.0.1/24"),)}
    problem = only(problems_for(config(mode="l4-nat", servers=("198.19.0.11", "198.19.0.12")), facts(behind)))
    assert problem.level == "advisory" and problem.path_key == ("services", 1, "l4")
    assert problem.message.startswith("servers must route their replies back through this balancer (their default "
                                      "route or a route to the clients via 198.19.0.1)")


def test_nat_route_back_falls_back_to_the_interface_address_never_the_vip():
    on_lb0 = {"lb0": (ipaddress.IPv4Interface("198.18.0.100/32"), *LB0)}
    problem = only(problems_for(config(mode="l4-nat", servers=("10.9.0.11",)), facts(on_lb0)))
    assert "a route to the clients via 198.18.0.10)" in problem.message


def test_nat_with_source_nat_needs_no_route():
    assert problems_for(config(mode="l4-nat", l4="{interface: lb0, source_nat: true}",
                               servers=("10.9.0.11",)), facts()) == []


def test_reading_this_host():
    read = read_host()
    assert read.uid == os.geteuid()
    if os.geteuid() == 0:
        assert read.net_admin
    assert ipaddress.IPv4Interface("127.0.0.1/8") in read.interfaces["lo"]
    assert read.addresses_unknown is None
