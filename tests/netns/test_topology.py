"""The namespace topology cleans up after itself and never touches the host's network."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_the_clients_own_connections_never_take_a_port_the_tests_bind(kernel_tools):
    """Tests choose client ports (names_by_port, 42000-45599) to spread flows; storescu,
    curl or wrk run in the same namespace pick ephemeral ports from a range that holds
    them. One such socket, still in TIME_WAIT without SO_REUSEADDR, made a test's bind
    fail with EADDRINUSE (test_l4_example, once in a make test run)."""
    script = ("import socket, json\n"
              "listener = socket.create_server(('127.0.0.1', 8080))\n"
              "held = [socket.create_connection(('127.0.0.1', 8080)) for _ in range(5)]\n"
              "print(json.dumps([s.getsockname()[1] for s in held]))\n")
    with Topology("flat") as topo:
        client = topo["cli"]
        client.sysctl(net__ipv4__ip_local_port_range="45995 46004")  # five of its ten ports are the tests'
        ports = json.loads(client.run(sys.executable, "-c", script).stdout)
    assert sorted(ports) == [46000, 46001, 46002, 46003, 46004]
