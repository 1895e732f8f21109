"""`medlb demo --pair`: as root it starts the pair in namespaces, the VIP answers, the
banner's kill command moves it, and Ctrl-C removes every namespace; not as root it
refuses, changing nothing."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import need_tool
from netns_fixtures import kernel_tools  # noqa: F401 (a pytest fixture)


def namespaces(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(f"medlbdemo-{pid}-")]


def vip_answer(cli: str) -> str:
    return subprocess.run(["ip", "netns", "exec", cli, "curl", "-s", "--max-time", "1", "http://198.18.0.100/"],
                          capture_output=True, text=True, check=False).stdout


def test_the_pair_demo_serves_on_the_vip_moves_it_when_the_active_node_is_killed_and_cleans_up(kernel_tools):
    need_tool("keepalived")
    need_tool("curl")
    proc = subprocess.Popen([sys.executable, "-m", "medlb", "demo", "--pair"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "ha takeover --yes" in line:  # the banner's last line
                break
        output = "".join(lines)
        assert "medlb demo --pair is running" in output, output
        cli = re.search(r"ip netns exec (medlbdemo-\d+-cli) curl", output).group(1)
        assert "served by web" in vip_answer(cli)
        active = re.search(r"active now: (lb-[ab])", output).group(1)
        kill = re.search(r"kill -9 (\d+)", output).group(1)
        os.kill(int(kill), signal.SIGKILL)  # the banner's command
        started = time.monotonic()
        other = "lb-b" if active == "lb-a" else "lb-a"
        pid = re.search(r"medlbdemo-(\d+)-", output).group(1)
        while True:
            shown = subprocess.run(["ip", "-n", f"medlbdemo-{pid}-{other}", "-o", "-4", "addr", "show", "dev", "lb0"],
                                   capture_output=True, text=True, check=False).stdout
            if " 198.18.0.100/" in shown and "served by web" in vip_answer(cli):
                break
            assert time.monotonic() - started < 30, f"the VIP did not move to {other}"
            time.sleep(0.1)
        print(f"\ndemo: {active} killed, {other} serves the VIP after {time.monotonic() - started:.2f} s")
        assert namespaces(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "its namespaces are removed" in rest
    assert namespaces(proc.pid) == []


def test_the_pair_demo_refuses_without_root_and_changes_nothing():
    """Run in a user namespace of its own, where it is not root (uid 65534), yet still
    reads the files it needs as their owner outside."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to run the demo as a user that is not root")
    done = subprocess.run([unshare, "--user", sys.executable, "-m", "medlb", "demo", "--pair"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "medlb demo --pair needs root" in done.stderr and "nothing was changed" in done.stderr
