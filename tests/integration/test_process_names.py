"""`ps` and `pidof` show medlb as `medlb` and its workers as `medlb: worker N`, so the
operator's `pidof medlb` finds the control process (and only it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import need_tool
from helpers import free_ports, server, service, wait_until


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_the_control_process_is_medlb_and_workers_are_medlb_worker_n(medlb, backends):
    pidof = need_tool("pidof")
    vip, a = free_ports(2)
    backends.start("A", a)
    lb = medlb([service("pacs", vip, [server("A", a)])], workers=2)
    wait_until(lambda: all(p["alive"] for p in lb.api("GET", "/api/v1/workers").json()["processes"]), 10,
               what="both workers running")
    workers = {p["index"]: p["pid"] for p in lb.api("GET", "/api/v1/workers").json()["processes"]}
    control = lb.proc.pid

    assert comm(control) == "medlb"
    assert cmdline(control).startswith("medlb")
    for index, pid in workers.items():
        assert comm(pid) == f"medlb: worker {index}"
        assert cmdline(pid).startswith(f"medlb: worker {index}")
    found = subprocess.run([pidof, "medlb"], capture_output=True, text=True).stdout.split()
    assert str(control) in found
    assert not set(map(str, workers.values())) & set(found), "pidof medlb must not name the workers"
