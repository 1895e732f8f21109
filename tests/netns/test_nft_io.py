"""kernel.nft and the rendered rulesets against the real kernel and nft of this machine,
in a namespace of their own: the fixtures load and list, a refused batch changes
nothing, other tables are never touched, and an element update leaves the kernel as a
full apply of the new state would."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from l4_helpers import listen, ruleset, server, service, with_taking
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)

from medlb.kernel.listing import map_elements
from medlb.kernel.nft import ForeignTable, Nft, NftError
from medlb.kernel.ruleset import (
    DR_TABLE,
    macs_map,
    render_apply,
    render_update,
    slots_map,
)

FIXTURES = Path(__file__).parents[1] / "unit" / "fixtures" / "l4"
#: What must exist before a fixture that changes an earlier state loads.
BEFORE = {
    "dr_update_halt_close.nft": (FIXTURES / "dr_apply.nft").read_text(),
    "nat_reload_apply.nft": "add table ip medlb_nat\nadd chain ip medlb_nat svc_old\n"
                            "add map ip medlb_nat slots_old { type mark : mark; }\n"
                            "add map ip medlb_nat targets_old { type mark : ipv4_addr; }\n"
                            "add counter ip medlb_nat traffic_old/a\n",
}


@pytest.fixture
def lb(topology):
    """The balancer namespace alone, with an interface lb0 (the fixtures' interface)."""
    return topology("single")["lb"]


def test_every_kept_fixture_loads_and_lists_with_this_nft(lb):
    nft = Nft(lb.netns)
    fixtures = sorted(FIXTURES.glob("*.nft"))
    assert len(fixtures) >= 6
    for fixture in fixtures:
        nft.delete_tables()
        if fixture.name in BEFORE:
            nft.apply(BEFORE[fixture.name])
        nft.check(fixture.read_text())
        nft.apply(fixture.read_text())
        for family, table in nft.tables():
            # the plain listing is the one nft 1.0.6 crashes on for `typeof jhash` maps
            listed = lb.run("nft", "list", "table", family, table, check=False)
            assert listed.returncode == 0, f"{fixture.name}: nft list table {table} failed: {listed.stderr}"
    nft.delete_tables()
    assert nft.tables() == []


def test_a_refused_batch_changes_nothing_and_carries_nfts_message(lb):
    nft = Nft(lb.netns)
    nft.apply((FIXTURES / "dr_apply.nft").read_text())
    before = nft.list_table(*DR_TABLE)
    bad = ("add element netdev medlb_dr slots_pacs-retrieve { 13 : 0x00000001 }\n"
           "add rule netdev medlb_dr svc_pacs-retrieve goto nowhere\n")
    with pytest.raises(NftError, match="goto nowhere") as refused:
        nft.apply(bad)
    assert "No such file or directory" in str(refused.value)
    assert nft.list_table(*DR_TABLE) == before
    with pytest.raises(NftError):
        nft.check(bad)
    nft.delete_tables()
    nft.check((FIXTURES / "dr_apply.nft").read_text())
    assert nft.tables() == [], "nft -c applied something"


def test_tables_of_others_are_never_touched(lb):
    nft = Nft(lb.netns)
    lb.run("nft", "add table inet filter; add chain inet filter input { type filter hook input priority 0; }")
    lb.run("nft", "add table netdev notmedlb")
    nft.apply((FIXTURES / "nat_apply.nft").read_text())
    assert nft.tables() == [("ip", "medlb_nat")]
    with pytest.raises(ForeignTable):
        nft.apply("delete table inet filter\n")
    assert nft.delete_tables() == [("ip", "medlb_nat")]
    assert nft.delete_table("ip", "medlb_nat") is False
    remaining = json.loads(lb.run("nft", "-j", "list", "tables").stdout)["nftables"]
    assert sorted(item["table"]["name"] for item in remaining if "table" in item) == ["filter", "notmedlb"]


def test_an_element_update_leaves_what_a_full_apply_of_the_new_state_leaves(lb):
    """With the real table size: one of three servers halted with `on_halt: close`."""
    name = "pacs"
    old = service(name, "dr", [listen("198.18.0.100", 104)],
                  [server(name, f"rs{n}", f"198.18.0.1{n}", mac=f"02:00:00:00:00:1{n}") for n in (1, 2, 3)],
                  size=65537, interface="lb0")
    new = with_taking(old, ["rs1", "rs3"], rs2={"forwarding": False})
    nft = Nft(lb.netns)
    started = time.perf_counter()
    nft.apply(render_apply(ruleset(old, macs={"lb0": lb.mac})))
    full_seconds = time.perf_counter() - started
    update = render_update(old, new)
    started = time.perf_counter()
    nft.apply(update)
    update_seconds = time.perf_counter() - started
    updated = nft.list_table(*DR_TABLE)
    nft.delete_tables()
    nft.apply(render_apply(ruleset(new, macs={"lb0": lb.mac})))
    fresh = nft.list_table(*DR_TABLE)
    for map_name in (slots_map(name), macs_map(name)):
        assert map_elements(updated, map_name) == map_elements(fresh, map_name), map_name
    assert len(map_elements(fresh, slots_map(name))) == 65537
    moved = len(old.table.moved_buckets(new.table))
    print(f"\nfull apply of a 65537-slot DR service: {full_seconds:.2f} s; update moving {moved} slots "
          f"and one MAC: {update_seconds:.2f} s")


def test_a_json_batch_replaces_a_slot_with_delete_and_add(lb):
    """The libnftables-json form of an element update, one transaction."""
    nft = Nft(lb.netns)
    nft.apply((FIXTURES / "dr_apply.nft").read_text())
    slots = {"family": "netdev", "table": "medlb_dr", "name": "slots_pacs-retrieve"}
    old = map_elements(nft.list_table(*DR_TABLE), "slots_pacs-retrieve")
    other = next(mark for mark in set(old.values()) if mark != old[0])
    nft.apply_json([{"delete": {"element": {**slots, "elem": [0]}}},
                    {"add": {"element": {**slots, "elem": [[0, other]]}}}])
    assert map_elements(nft.list_table(*DR_TABLE), "slots_pacs-retrieve") == {**old, 0: other}
    with pytest.raises(NftError, match="exists"):
        nft.apply_json([{"add": {"element": {**slots, "elem": [[1, other if old[1] != other else old[0]]]}}}])
