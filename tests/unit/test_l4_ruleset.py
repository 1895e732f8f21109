"""The nft commands rendered for the layer 4 services, against kept fixtures.

Like nftlb's tests/, each fixture is the exact text one description renders to, read
by a person once and kept. tests/netns/test_kernel_forms.py loads the same fixtures
into a real kernel (`nft -c`), so a fixture that nft 1.0.6 refuses fails there. After
a deliberate change of the rendering, MEDLB_REGENERATE_FIXTURES=1 rewrites them:
read the diff before committing it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import matches_fixture
from l4_helpers import listen, ruleset, server, service, with_taking

from medlb.kernel.description import L4Listen
from medlb.kernel.listing import TableObjects
from medlb.kernel.ruleset import (
    RulesetError,
    StructureChanged,
    render_apply,
    render_teardown,
    render_update,
)

FIXTURES = Path(__file__).parent / "fixtures" / "l4"
LB_MAC = "02:00:00:00:01:01"


def pacs_dr(**options):
    name = "pacs-retrieve"
    options.setdefault("pin_timeout", 7200)
    return service(name, "dr", [listen("198.18.0.100", 104, 11112)],
                   [server(name, "pacs1", "198.18.0.11", mac="02:00:00:00:00:11"),
                    server(name, "pacs2", "198.18.0.12", mac="02:00:00:00:00:12"),
                    server(name, "pacs3", "198.18.0.13", mac="02:00:00:00:00:13")],
                   taking=["pacs1", "pacs2"], **options)  # pacs3 is drained


def vna_nat(**options):
    name = "vna-nat"
    return service(name, "nat", [listen("198.18.0.101", (12000, 12950))],
                   [server(name, "vna1", "198.18.0.11"), server(name, "vna2", "198.18.0.12")],
                   source_nat=True, **options)


def hl7_nat():
    name = "hl7"
    return service(name, "nat", [listen("198.18.0.102", 2575), listen("198.18.0.103", 2575, 2576)],
                   [server(name, "engine1", "198.18.2.11", port=6661), server(name, "engine2", "198.18.2.12", port=6661)])


def check_fixture(name: str, text: str) -> None:
    matches_fixture(FIXTURES / name, text)


def table_names(text: str) -> set[str]:
    """The table every command line names (comments and continuation lines aside)."""
    commands = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    names = set()
    for line in commands:
        match = re.match(r"(add|delete|flush) (table|chain|map|set|counter|element|rule) (ip|netdev) (\S+)", line)
        assert match, f"a command of an unexpected form: {line}"
        names.add(match.group(4))
    return names


def test_dr_full_apply_matches_its_fixture():
    check_fixture("dr_apply.nft", render_apply(ruleset(pacs_dr(), macs={"lb0": LB_MAC})))


def test_nat_full_apply_matches_its_fixture():
    check_fixture("nat_apply.nft", render_apply(ruleset(vna_nat(), hl7_nat())))


def test_dr_by_client_address_matches_its_fixture():
    check_fixture("dr_source_apply.nft", render_apply(ruleset(pacs_dr(hash_key="source"), macs={"lb0": LB_MAC})))


def test_a_reload_deletes_what_it_removed_and_a_family_without_service_loses_its_table():
    present = [TableObjects("ip", "medlb_nat", chains=frozenset({"prerouting", "postrouting", "forward", "svc_vna-nat",
                                                                 "svc_old"}),
                            maps=frozenset({"slots_old", "targets_old", "slots_vna-nat"}),
                            sets=frozenset({"source_nat"}),
                            counters=frozenset({"traffic_old/a", "traffic_vna-nat/vna1"}))]
    text = render_apply(ruleset(vna_nat()), present)
    check_fixture("nat_reload_apply.nft", text)
    assert "flush chain ip medlb_nat svc_old\n" in text and "delete chain ip medlb_nat svc_old\n" in text
    assert "delete counter ip medlb_nat traffic_old/a\n" in text
    assert "delete counter ip medlb_nat traffic_vna-nat/vna1" not in text
    assert text.startswith("add table netdev medlb_dr\ndelete table netdev medlb_dr\n")


def test_the_full_apply_never_empties_pins_or_counters():
    text = render_apply(ruleset(pacs_dr(), vna_nat(), macs={"lb0": LB_MAC}))
    assert re.search(r"^add map netdev medlb_dr pins_pacs-retrieve ", text, re.MULTILINE)
    assert not re.search(r"^(flush|delete|reset) .*(pins_|counter)", text, re.MULTILINE)
    assert "flush map netdev medlb_dr slots_pacs-retrieve" in text


def test_the_kernel_bucket_selects_the_table_entry():
    """The rule hashes `mod SIZE` with the table's seed, and the slots map has one
    element per bucket 0..SIZE-1 holding that bucket's server."""
    dr = pacs_dr()
    text = render_apply(ruleset(dr, macs={"lb0": LB_MAC}))
    assert f"jhash ip saddr . tcp sport mod 13 seed 0x{dr.table.seed:08x}" in text
    elements = re.search(r"add element netdev medlb_dr slots_pacs-retrieve \{ (.*?) \}", text, re.DOTALL).group(1)
    pairs = dict(pair.split(" : ") for pair in re.split(r",\s*", elements))
    assert sorted(int(bucket) for bucket in pairs) == list(range(13))
    for bucket, mark in pairs.items():
        assert int(mark, 16) == dr.server(dr.table.server_for(int(bucket))).mark


def test_every_command_names_only_medlb_tables():
    texts = [render_apply(ruleset(pacs_dr(), vna_nat(), hl7_nat(), macs={"lb0": LB_MAC})), render_teardown()]
    for text in texts:
        assert table_names(text) <= {"medlb_dr", "medlb_nat"}
    assert "ruleset" not in "".join(texts)


def test_halt_with_close_updates_only_the_elements_it_must():
    old = pacs_dr()
    new = with_taking(old, ["pacs1"], pacs2={"forwarding": False})
    text = render_update(old, new)
    check_fixture("dr_update_halt_close.nft", text)
    moved = old.table.moved_buckets(new.table)
    deleted = re.search(r"delete element netdev medlb_dr slots_pacs-retrieve \{ (.*?) \}", text, re.DOTALL).group(1)
    assert sorted(int(b) for b in re.split(r",\s*", deleted)) == moved
    assert "delete element netdev medlb_dr macs_pacs-retrieve { 0x" in text  # pacs2's MAC: its pins stop


def test_drain_keeps_the_mac_and_nat_updates_only_slots():
    old = pacs_dr()
    drained = with_taking(old, ["pacs1"])
    assert "macs_" not in render_update(old, drained)
    nat = vna_nat()
    text = render_update(nat, with_taking(nat, ["vna2"], vna1={"forwarding": False}))
    assert set(re.findall(r"^\w+ element ip medlb_nat (\S+)", text, re.MULTILINE)) == {"slots_vna-nat"}


def test_no_change_renders_nothing_and_a_structural_change_asks_for_a_full_apply():
    old = pacs_dr()
    assert render_update(old, with_taking(old, ["pacs1", "pacs2"])) == ""
    with pytest.raises(StructureChanged):
        render_update(old, pacs_dr(pin_timeout=60))


def test_teardown_removes_both_tables_even_when_absent():
    check_fixture("teardown.nft", render_teardown())


@pytest.mark.parametrize(("make", "message"), [
    (lambda: service("a; flush ruleset", "nat", [listen("198.18.0.1", 1)], []), "cannot be used in nftables"),
    (lambda: service("a", "dr", [listen("198.18.0.1", 1)], [server("a", "s1", "198.18.0.2")]), "MAC is unknown"),
    (lambda: service("a", "dr", [listen("198.18.0.1", 1)], [server("a", "s1", "198.18.0.2", mac="02:00:00:00:00:01")],
                     interface='lb0" ; drop'), "not an interface name"),
    (lambda: service("a", "nat", [listen("198.18.0.1", 1)],
                     [server("a", "s1", "198.18.0.2", port=80), server("a", "s2", "198.18.0.3")]), "every server has a port"),
    (lambda: service("a", "nat", [listen("198.18.0.1", (5, 4))], []), "not valid"),
])
def test_descriptions_nft_cannot_take_are_refused_with_the_reason(make, message):
    with pytest.raises(RulesetError, match=message):
        render_apply(ruleset(make(), macs={"lb0": LB_MAC}))


def test_services_sharing_a_vip_port_or_a_mark_are_refused():
    one = service("one", "nat", [listen("198.18.0.1", (100, 200))], [server("one", "s", "198.18.0.2")])
    two = service("two", "nat", [listen("198.18.0.1", 150)], [server("two", "s", "198.18.0.3")])
    with pytest.raises(RulesetError, match="both listen on 198.18.0.1 port 150"):
        render_apply(ruleset(one, two))
    clash = service("three", "nat", [listen("198.18.0.9", 1)], [server("one", "s", "198.18.0.2")])
    with pytest.raises(RulesetError, match="same mark"):
        render_apply(ruleset(one, clash))


def test_an_ipv6_vip_is_refused():
    nat = vna_nat()
    six = replace(nat, listens=(L4Listen(ipaddress.IPv6Address("2001:db8::1"), ((104, 104),)),))
    with pytest.raises(RulesetError, match="IPv4 only"):
        render_apply(ruleset(six))
