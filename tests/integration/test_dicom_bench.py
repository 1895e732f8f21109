"""The DICOM benchmark keeps working: run it tiny and check that figures come back.

The figures themselves are not asserted (this is not a performance test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]


def test_the_dicom_benchmark_runs_and_reports_figures(tmp_path):
    need_tool("storescu")
    need_tool("storescp")
    report = tmp_path / "dicom.md"

    result = subprocess.run([sys.executable, str(ROOT / "bench" / "dicom_store.py"), "--count", "5", "--pairs", "1",
                             "--latency", "5", "--output", str(report), "--json"],
                            capture_output=True, text=True, timeout=180, cwd=ROOT)

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert len(figures["pairs"]) == 1 and figures["median_ratio"] > 0
    assert figures["latency"]["samples"] == 5 and figures["latency"]["medlb_p50_ms"] > 0
    assert "Median throughput ratio" in report.read_text()
