"""The benchmark harness works: one tiny run of every scenario gives numbers.

Asserts only that figures came back, never what they are: speed is measured by
`make bench`, side by side with HAProxy, not by tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_returns_figures_in_a_quick_run(tmp_path):
    for tool in ("haproxy", "iperf3", "wrk", "nginx", "storescu", "storescp"):
        need_tool(tool)

    # The layer 4 rows need root and namespaces: the next test runs them.
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--skip", "l4-dr,l4-nat",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads((tmp_path / "latest.json").read_text())["rows"]
    measured = [r for r in rows if r["note"] != "mode not yet available"]
    assert {r["scenario"].split(",")[0].split(" (")[0] for r in measured} >= {
        "TCP bulk throughput", "new TCP connections per second", "memory per idle connection",
        "HL7 messages/s with ACKs", "HTTP keep-alive requests/s", "HTTPS", "DICOM C-STORE of 20 instances",
        "DICOM association set-up"}
    assert any("2 workers vs nbthread 2" in r["scenario"] for r in measured), "1 versus 2 workers is in the table"
    for row in measured:
        assert row["medlb"] is not None and row["peer"] is not None, row
    assert "| scenario |" in (tmp_path / "latest.md").read_text()
    assert (tmp_path / "latest.png").stat().st_size > 1000


def test_the_layer_4_rows_run_in_namespaces_and_give_ratios_to_the_direct_path(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and nftables")
    for tool in ("ip", "nft", "iperf3", "wrk", "nginx"):
        need_tool(tool)

    bench = subprocess.Popen([sys.executable, "-m", "bench.run", "--quick", "--only", "l4-dr,l4-nat",
                              "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        output, _ = bench.communicate(timeout=300)
    finally:
        bench.kill()

    assert bench.returncode == 0, output[-4000:]
    rows = json.loads((tmp_path / "latest.json").read_text())["rows"]
    kinds = ("DR (l4-dr) bulk", "NAT (l4-nat, source_nat) bulk", "NAT (l4-nat, source_nat) new connections",
             "control process CPU")
    by_kind = {kind: [r for r in rows if kind in r["scenario"]] for kind in kinds}
    assert [len(found) for found in by_kind.values()] == [1, 1, 1, 2], [r["scenario"] for r in rows]
    for row in rows:
        assert not row["note"].startswith(("skipped", "failed")), row
        assert row["ratio"] is not None, row
        if "CPU" in row["scenario"]:  # an idle control process may well use no tick in a quick run
            assert " s CPU over " in row["note"], f"the control process's CPU was not measured: {row}"
        else:
            assert row["medlb"] > 0 and row["peer"] > 0 and row["ratio"] > 0, row
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"medlbt-{bench.pid}-" not in namespaces, "the bench left its namespaces behind"
