"""Which node of the pair this medlb is.

The config file is byte-identical on both nodes, so the node's identity comes from the
host: the `ha.nodes` entry whose address is on one of this host's interfaces, or the
operator's `medlb run --node NAME` (two nodes on one host, as in tests, or an address
not yet configured). Pure: the caller reads the host's addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from medlb.config.models import HaConfig, HaNode


class NodeUnknown(ValueError):
    """This host is neither node, or both, or --node names no node; says what to do."""


def choose(ha: HaConfig, named: str | None, local: Iterable[ipaddress.IPv4Address]) -> HaNode:
    """This node: the one `named`, or the one whose address this host has."""
    known = ", ".join(f"{node.name} ({node.address})" for node in ha.nodes)
    if named is not None:
        for node in ha.nodes:
            if node.name == named:
                return node
        raise NodeUnknown(f"--node {named}: ha.nodes has no node of that name (it has {known})")
    here = set(local)
    mine = [node for node in ha.nodes if node.address in here]
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise NodeUnknown(f"this host has none of the node addresses of ha.nodes ({known}); add this node's "
                          "address to its interface, or name the node with medlb run --node NAME")
    raise NodeUnknown(f"this host has the addresses of both nodes ({known}); name this one with "
                      "medlb run --node NAME")
