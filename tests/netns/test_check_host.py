"""`medlb check` inside a balancer namespace: what the host checks of the layer 4 modes
refuse, each next to the file they accept there (the negative control)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import need_tool
from netns_fixtures import kernel_tools, topology  # noqa: F401 (pytest fixtures)


@pytest.fixture
def config_dir() -> Iterator[Path]:
    """A folder user nobody can read (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory(prefix="medlb-check-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def write(folder: Path, text: str, name: str = "medlb.yaml") -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    path.chmod(0o644)
    return str(path)


def dr_config(folder: Path, *servers: str) -> str:
    listed = "".join(f'      - {{name: pacs{i}, address: "{address}"}}\n' for i, address in enumerate(servers, 1))
    head = textwrap.dedent("""
        services:
          - name: pacs-retrieve
            mode: l4-dr
            listen: ["198.18.0.100:104"]
            l4: {interface: lb0}
            servers:
        """)
    return write(folder, head + listed, name=f"dr-{'-'.join(servers)}.yaml")


@pytest.fixture
def balancer(topology):
    """The `single` topology's balancer namespace, lb0 on 198.18.0.10/24."""
    lb = topology("single")["lb"]
    lb.run("ip", "addr", "add", "198.18.0.10/24", "dev", "lb0")
    return lb


def check(node, path: str, *prefix: str) -> subprocess.CompletedProcess[str]:
    return node.run(*prefix, sys.executable, "-m", "medlb", "check", path, check=False)


def test_a_dr_server_on_a_foreign_subnet_is_refused(balancer, config_dir):
    foreign = check(balancer, dr_config(config_dir, "198.18.0.11", "198.18.5.11"))
    same = check(balancer, dr_config(config_dir, "198.18.0.11", "198.18.0.12"))

    assert foreign.returncode == 2, foreign.stdout
    assert "services[0] (pacs-retrieve).servers[1] (pacs2).address (line 8): server pacs2 198.18.5.11 is not on a subnet of lb0 " \
           "(198.18.0.10/24): Direct Routing sends frames, so servers must be on the same segment" in foreign.stderr
    assert "pacs1" not in foreign.stderr
    assert same.returncode == 0, same.stderr
    assert "pacs-retrieve [l4-dr]" in same.stdout


def test_not_root_is_refused(balancer, config_dir):
    need_tool("setpriv")
    path = dr_config(config_dir, "198.18.0.11")

    as_nobody = check(balancer, path, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    as_root = check(balancer, path)

    assert as_nobody.returncode == 2, as_nobody.stdout
    assert "services[0] (pacs-retrieve).mode (line 3): mode l4-dr needs root (CAP_NET_ADMIN) to program nftables; this process " \
           "runs as uid 65534 without it" in as_nobody.stderr
    assert as_root.returncode == 0, as_root.stderr


def test_without_nftables_is_refused(balancer, config_dir):
    """A PATH that holds `ip` but no `nft`: a host where nftables is not installed."""
    tools = Path(config_dir) / "bin"
    tools.mkdir()
    (tools / "ip").symlink_to(need_tool("ip"))
    path = dr_config(config_dir, "198.18.0.11")

    result = check(balancer, path, "env", f"PATH={tools}")

    assert result.returncode == 2, result.stdout
    assert "services[0] (pacs-retrieve).mode (line 3): nft is not installed (Debian package nftables); mode l4-dr needs it to " \
           "program the kernel" in result.stderr


def test_nat_without_source_nat_is_advised_to_route_back_and_runs(balancer, config_dir):
    path = write(config_dir, """
        services:
          - name: vna-nat
            mode: l4-nat
            listen: ["198.18.0.101:12000-12001"]
            l4: {interface: lb0}
            servers:
              - {name: vna1, address: "198.18.0.11"}
        """)

    result = check(balancer, path)

    assert result.returncode == 0, result.stderr
    assert "advisories (medlb runs with these):" in result.stdout
    assert "services[0] (vna-nat).l4 (line 5): servers must route their replies back through this balancer (their default " \
           "route or a route to the clients via 198.18.0.10)" in result.stdout
