"""medlb's measured rates for `medlb plan`: the last `make bench` of this checkout
(bench/results/latest.json) when there is one, else the figures shipped with the
package (rates.json, from docs/performance.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from medlb.plan.sizing import MeasuredRates

SHIPPED = Path(__file__).with_name("rates.json")
#: bench/results/latest.json of the checkout this package runs from (src/medlb/plan/ -> the root).
CHECKOUT_RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results" / "latest.json"


def measured_rates(path: Path | None = None) -> MeasuredRates:
    """From `path` if given, else the checkout's last full bench run, else the shipped
    figures. A quick run (`--quick`, figures meaningless) or one without the two rates
    is passed over."""
    candidates = [path] if path is not None else [CHECKOUT_RESULTS, SHIPPED]
    for candidate in candidates:
        rates = _read(candidate)
        if rates is not None:
            return rates
    if path is not None:
        raise ValueError(f"{path}: not a bench result with the TCP bulk and DICOM C-STORE rates of a full run")
    raise ValueError(f"{SHIPPED}: the shipped rates are missing")


def _read(path: Path) -> MeasuredRates | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("quick"):
        return None
    rows: list[dict[str, Any]] = [row for row in data.get("rows", []) if isinstance(row, dict)]
    relay = [row["medlb"] for row in rows if str(row.get("scenario", "")).startswith("TCP bulk throughput")
             and row.get("unit") == "Gbit/s" and isinstance(row.get("medlb"), (int, float))]
    dicom = [row["medlb"] for row in rows if str(row.get("scenario", "")).startswith("DICOM C-STORE")
             and row.get("unit") == "instances/s" and isinstance(row.get("medlb"), (int, float))]
    if not relay or not dicom:
        return None
    when = time.strftime("%Y-%m-%d", time.gmtime(data["started"])) if "started" in data else "an unknown date"
    source = data.get("source") or f"{path}, make bench on {when}"
    return MeasuredRates(max(relay), max(dicom), source)
