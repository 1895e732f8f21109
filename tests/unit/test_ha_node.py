"""Which node of the pair this medlb is (`medlb run --node`, or the address on this
host), and the role keepalived reports on the notify FIFO."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from medlb.config import parse_config
from medlb.ha import node
from medlb.ha.supervisor import parse_notify

HA = parse_config((Path(__file__).resolve().parents[2] / "examples" / "ha.yaml").read_text()).config.ha
A, B = ipaddress.IPv4Address("198.18.0.4"), ipaddress.IPv4Address("198.18.0.5")
OTHER = ipaddress.IPv4Address("10.1.2.3")


def test_the_node_is_the_one_whose_address_this_host_has_or_the_one_named():
    assert node.choose(HA, None, [OTHER, B]).name == "lb-b"
    assert node.choose(HA, "lb-a", [B]).name == "lb-a"  # --node wins over the addresses


@pytest.mark.parametrize(("named", "local", "words"), [
    (None, [OTHER], "this host has none of the node addresses of ha.nodes (lb-a (198.18.0.4), lb-b (198.18.0.5))"),
    (None, [A, B], "this host has the addresses of both nodes"),
    ("lb-c", [A], "--node lb-c: ha.nodes has no node of that name (it has lb-a (198.18.0.4), lb-b (198.18.0.5))"),
])
def test_a_host_that_is_neither_node_or_both_is_told_what_to_do(named, local, words):
    with pytest.raises(node.NodeUnknown) as refused:
        node.choose(HA, named, local)
    assert words in str(refused.value)
    assert "--node" in str(refused.value)


def test_the_role_is_read_from_our_instances_fifo_lines_only():
    assert parse_notify('INSTANCE "medlb" MASTER 150') == "MASTER"
    assert parse_notify('INSTANCE "medlb" FAULT 150\n') == "FAULT"
    assert parse_notify('INSTANCE "other" MASTER 150') is None
    assert parse_notify('GROUP "medlb" MASTER') is None
    assert parse_notify('INSTANCE "medlb" DELETED 150') is None
    assert parse_notify("") is None
