"""kernel.nft refuses, before running anything, a batch that names a table not medlb's."""

from __future__ import annotations

import pytest

from medlb.kernel.nft import ForeignTable, Nft, check_json_owned, check_text_owned


def test_medlb_commands_pass_and_comments_and_element_lines_are_skipped():
    check_text_owned("# why\nadd table ip medlb_nat\nadd element ip medlb_nat slots_a { 0 : 0x1,\n    1 : 0x2 }\n")


@pytest.mark.parametrize("text", [
    "add table inet filter\n",
    "add table ip medlb_nat\nflush chain ip nat PREROUTING\n",
    "flush ruleset\n",
    "table ip medlb_nat { }\n",
    "delete table netdev medlb_dr\nlist ruleset\n",
])
def test_anything_else_is_refused_with_the_line(text):
    with pytest.raises(ForeignTable, match="line"):
        check_text_owned(text)


def test_json_batches_are_held_to_the_same_rule():
    check_json_owned([{"add": {"table": {"family": "ip", "name": "medlb_nat"}}},
                      {"delete": {"element": {"family": "ip", "table": "medlb_nat", "name": "slots_a", "elem": [1]}}}])
    with pytest.raises(ForeignTable):
        check_json_owned([{"flush": {"chain": {"family": "ip", "table": "filter", "name": "INPUT"}}}])


def test_refused_calls_never_reach_nft():
    nft = Nft(binary="/nonexistent/nft")  # it would fail differently if it were run
    with pytest.raises(ForeignTable):
        nft.apply("add table inet filter\n")
    with pytest.raises(ForeignTable):
        nft.delete_table("inet", "filter")
    with pytest.raises(ForeignTable):
        nft.list_table("inet", "filter")
