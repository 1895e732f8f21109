"""Fixtures for the tests in network namespaces: root, ip and nft, and topologies that
are removed whatever the test does. A test module imports them by name
(`from netns_fixtures import kernel_tools, topology`): tests/conftest.py is the one
conftest, which other test modules import from.
"""

from __future__ import annotations

import os

import pytest
from conftest import need_tool
from topology import Topology


@pytest.fixture
def kernel_tools() -> None:
    """Root and the tools; skip without them (a failure under CI=true, as every skip)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and nftables")
    need_tool("ip")
    need_tool("nft")


@pytest.fixture
def topology(kernel_tools):
    """make(variant) -> an entered Topology; all of them are removed after the test."""
    made: list[Topology] = []

    def make(variant: str = "flat", **options) -> Topology:
        made.append(Topology(variant, **options))
        return made[-1].__enter__()

    yield make
    for topo in made:
        topo.close()
