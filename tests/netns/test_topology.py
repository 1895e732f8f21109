"""The namespace topology cleans up after itself and never touches the host's network."""

from __future__ import annotations

import subprocess

import pytest

from netns_fixtures import kernel_tools  # noqa: F401 (pytest fixture)
from topology import PREFIX, Topology, _namespaces


def host_network() -> tuple[str, str, str]:
    """The host namespace's links, routes and nftables ruleset, as text."""
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    links = out("ip", "-o", "link", "show")
    return "\n".join(line.split(":")[1] for line in links.splitlines()), out("ip", "route"), out("nft", "list", "ruleset")


def ours(topo: Topology) -> list[str]:
    return [netns for netns in _namespaces() if netns.startswith(f"{PREFIX}-{topo.run_id}-")]


@pytest.mark.parametrize("failure", [AssertionError, KeyboardInterrupt])
def test_everything_is_removed_when_the_test_fails_and_the_host_is_untouched(kernel_tools, failure):
    host = host_network()
    topo = Topology("nat-behind")
    with pytest.raises(failure):
        with topo:
            assert len(ours(topo)) == 6
            topo["lb"].run("nft", "add table ip medlb_nat")
            topo.start("rs1", ["sleep", "600"], ready=None)
            raise failure("the test failed")
    assert ours(topo) == []
    assert topo.processes[0].poll() is not None
    assert host_network() == host


def test_namespaces_of_a_killed_run_are_removed_by_the_next(kernel_tools):
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"{PREFIX}-{gone.pid}-1-sw"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with Topology("single"):
            assert stale not in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True, check=False)
