"""`medlb check` and `medlb rs-setup` for the kernel layer 4 modes, as an operator runs
them. What the host checks say inside a network namespace is in tests/netns."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "l4.yaml"


def medlb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medlb", *args], capture_output=True, text=True, timeout=60)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "medlb.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def one_l4_service(tmp_path: Path, listen: str = "198.18.0.100:104", mode: str = "l4-dr",
                   l4: str = "{interface: lb0}") -> Path:
    return write(tmp_path, f"""
        services:
          - name: pacs
            mode: {mode}
            listen: ["{listen}"]
            l4: {l4}
            servers:
              - {{name: pacs1, address: "198.18.0.11"}}
          - name: front
            listen: ["127.0.0.1:2104"]
            servers:
              - {{name: f1, address: "127.0.0.1:3104"}}
        """)


def test_check_summarises_the_l4_services_of_the_example():
    result = medlb("check", "--no-host", str(EXAMPLE))

    assert result.returncode == 0, result.stderr
    assert "pacs-retrieve [l4-dr] 198.18.0.100:104,11112" in result.stdout
    assert "maglev, persistence none, check dicom-echo every 1s" in result.stdout
    assert "l4: interface lb0; VIP added by medlb; on_stop remove; pins 2h" in result.stdout
    assert "l4: interface lb0; source_nat on; VIP added by medlb; on_stop remove" in result.stdout
    assert "not yet available" not in result.stdout


def test_check_refuses_an_ipv6_vip(tmp_path):
    result = medlb("check", "--no-host", str(one_l4_service(tmp_path, listen="[2001:db8::100]:104")))

    assert result.returncode == 2
    assert "services[0] (pacs).listen[0] (line 4): 2001:db8::100: IPv4 only in this release for l4 modes" in result.stderr


def test_check_refuses_a_file_this_host_cannot_run_and_no_host_checks_the_file_alone(tmp_path):
    path = one_l4_service(tmp_path, l4="{interface: nosuchif0}")

    here = medlb("check", str(path))
    alone = medlb("check", "--no-host", str(path))

    assert here.returncode == 2
    assert "valid, but medlb cannot run it on this host (medlb check --no-host checks the file alone)" in here.stderr
    assert "services[0] (pacs).l4.interface (line 5): interface nosuchif0 does not exist on this host (it has " \
           in here.stderr
    assert alone.returncode == 0, alone.stderr
    assert "valid, 2 service(s)" in alone.stdout


def test_rs_setup_for_dr_prints_the_commands_and_how_to_keep_them():
    result = medlb("rs-setup", "-c", str(EXAMPLE), "pacs-retrieve", "--nic", "ens192")

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "# Run as root on each of: pacs1 (198.18.0.11), pacs2 (198.18.0.12), dr1 (198.18.0.21)." in out
    now = out[out.index("# 1. Now"):out.index("# 2.")].splitlines()[1:]
    assert [line for line in now if line] == [
        "ip addr add 198.18.0.100/32 dev lo",
        "sysctl -w net.ipv4.conf.all.arp_ignore=1",
        "sysctl -w net.ipv4.conf.all.arp_announce=2",
        "sysctl -w net.ipv4.conf.ens192.arp_ignore=1",
        "sysctl -w net.ipv4.conf.ens192.arp_announce=2",
    ]
    assert "cat > /etc/sysctl.d/90-medlb-dr.conf <<'EOF'\nnet.ipv4.conf.all.arp_ignore = 1\n" in out
    assert "[Match]\nName=lo\n\n[Network]\nAddress=127.0.0.1/8\nAddress=198.18.0.100/32\nEOF" in out
    assert "#     up   ip addr add 198.18.0.100/32 dev lo" in out
    assert "listens on ports 104, 11112" in out


def test_rs_setup_for_dr_names_eth0_unless_told():
    result = medlb("rs-setup", "-c", str(EXAMPLE), "pacs-retrieve")

    assert result.returncode == 0, result.stderr
    assert "sysctl -w net.ipv4.conf.eth0.arp_ignore=1" in result.stdout


def test_rs_setup_for_nat_with_source_nat_has_nothing_to_run():
    result = medlb("rs-setup", "-c", str(EXAMPLE), "vna-nat")

    assert result.returncode == 0, result.stderr
    assert "# Nothing to run." in result.stdout
    assert "ip route" not in result.stdout


def test_rs_setup_for_nat_without_source_nat_prints_the_route_back(tmp_path):
    path = one_l4_service(tmp_path, mode="l4-nat", l4="{interface: nosuchif0}")

    result = medlb("rs-setup", "-c", str(path), "pacs")

    assert result.returncode == 0, result.stderr
    # This host has neither the interface nor an address on the servers' subnet.
    assert "# BALANCER: the balancer's address on the servers' segment (not a VIP)." in result.stdout
    assert "ip route replace default via BALANCER" in result.stdout
    assert "ip route add CLIENTS via BALANCER" in result.stdout


def test_rs_setup_refuses_an_unknown_service():
    result = medlb("rs-setup", "-c", str(EXAMPLE), "pacs")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "has no service named 'pacs' (it has pacs-retrieve, vna-nat)" in result.stderr


def test_rs_setup_refuses_a_layer_7_service(tmp_path):
    result = medlb("rs-setup", "-c", str(one_l4_service(tmp_path)), "front")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "service 'front' is mode tcp: rs-setup is for the kernel layer 4 modes (l4-dr, l4-nat)" in result.stderr


def test_rs_setup_refuses_an_invalid_file(tmp_path):
    result = medlb("rs-setup", "-c", str(one_l4_service(tmp_path, listen="0.0.0.0:104")), "pacs")

    assert result.returncode == 2
    assert "services[0] (pacs).listen[0] (line 4): 0.0.0.0 (every address) cannot be a VIP" in result.stderr
