"""The benchmark harness works: one tiny run of every scenario gives numbers.

Asserts only that figures came back, never what they are: speed is measured by
`make bench`, side by side with HAProxy, not by tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_returns_figures_in_a_quick_run(tmp_path):
    for tool in ("haproxy", "iperf3", "wrk", "nginx", "storescu", "storescp"):
        need_tool(tool)

    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)

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
