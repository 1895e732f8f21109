"""The soak harness works: a 20 s run of `python -m bench.soak` starts every peer and
medlb, drives every mode, disrupts, and writes its table.

Asserts that the harness ran and measured, never medlb's verdict: the musts are judged
by `make soak` over ten minutes, not by 20 s on a shared machine (a run that found a
must broken is a pass here, as long as it says which).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_short_soak_drives_every_mode_and_writes_its_table(tmp_path):
    for tool in ("storescu", "storescp", "echoscu"):
        need_tool(tool)

    run = subprocess.run([sys.executable, "-m", "bench.soak", "--seconds", "20", "--chaos-every", "2",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=540, check=False)

    # 0: every must held; 1: a must was broken and named; 2 or a traceback: the harness broke.
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-5000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    broken = [m["must"] for m in result["musts"] if m["ok"] is False]
    assert (run.returncode == 1) == bool(broken)
    for name in broken:
        assert f"BROKEN: {name}" in run.stderr
    assert set(result["traffic"]) == {"tcp", "dicom", "mllp", "http"}
    for mode, row in result["traffic"].items():
        assert row["succeeded"] > 0, (mode, row)
        assert row["attempted"] == row["succeeded"] + row["failed"]
        assert row["failed"] == row["at_death"] + row["after_down"] + row["no_server_down"]
    hl7 = result["hl7"]
    assert hl7["sent"] == hl7["acked_aa"] + hl7["naked"] + hl7["wrong_ack"] + hl7["lost"] > 0
    assert hl7["received_by_engines"] >= hl7["acked_aa"]
    assert sum(result["chaos"]["counts"].values()) > 0, "the chaos loop acted"
    assert {"control", "worker 0", "worker 1"} <= set(result["rss"])
    assert result["api"]["polls"] > 0
    assert result["chaos"]["harness"] == [], "every killed peer started again"
    table = (tmp_path / "soak.md").read_text()
    assert "**Verdict:" in table and "| mode | unit | attempted |" in table and "| sent |" in table
