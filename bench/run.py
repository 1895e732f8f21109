"""`make bench`: run every scenario, write bench/results/latest.{md,json,png}.

  python -m bench.run [--quick] [--only hl7,tcp-bulk] [--skip l4-dr,l4-nat] [--out DIR]

Each ratio is medlb / peer (for memory, lower is better; for the rest, higher).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from bench.common import ROOT, Row
from bench.scenarios import SCENARIOS


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def markdown(rows: list[Row], started: float, quick: bool) -> str:
    lines = [
        "# medlb benchmarks",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} on {platform.node()} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})"
        f"{' — QUICK run, figures meaningless' if quick else ''}; load average at the end "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())} (other work on the machine makes figures noisier).",
        "Each scenario alternates medlb and its peer (A B A B ...); values are medians, the ratio is the median "
        "of the per-pair ratios (medlb / peer).",
        "",
        "| scenario | medlb | peer | unit | ratio | target | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row.scenario} | {_fmt(row.medlb)} | {_fmt(row.peer)} ({row.peer_name}) | {row.unit} | "
                     f"{_fmt(row.ratio)} | {row.target} | {row.note} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    plotted = [r for r in rows if r.ratio is not None and r.target.startswith(("<=", ">="))]
    if not plotted:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(plotted) + 1.5))
    names = [r.scenario for r in plotted]
    ratios = [r.ratio for r in plotted]
    targets = [float(r.target.split()[1]) for r in plotted]
    lower_better = [r.target.startswith("<=") for r in plotted]
    colours = ["#2e7d32" if (ratio <= t if lb else ratio >= t) else "#c62828"
               for ratio, t, lb in zip(ratios, targets, lower_better)]
    ax.barh(names, ratios, color=colours)
    for index, target in enumerate(targets):
        ax.plot([target, target], [index - 0.4, index + 0.4], color="black", linewidth=2)
    ax.set_xlabel("ratio medlb / peer (black line: target; green meets it)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny runs: checks the harness, not the speed")
    parser.add_argument("--only", help="comma-separated scenario names: " + ", ".join(SCENARIOS))
    parser.add_argument("--skip", default="", help="comma-separated scenario names to leave out")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    skipped = set(args.skip.split(","))
    names = [name for name in (args.only.split(",") if args.only else SCENARIOS) if name not in skipped]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[Row] = []
    for name in names:
        print(f"bench: {name} ...", flush=True)
        try:
            rows += SCENARIOS[name](args.quick)
        except Exception as exc:  # one broken scenario must not hide the others
            traceback.print_exc()
            rows.append(Row(name, "", None, None, "", None, "", note=f"failed: {exc.__class__.__name__}: {exc}"))
    text = markdown(rows, started, args.quick)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps({"started": started, "quick": args.quick,
                                                 "rows": [r.as_dict() for r in rows]}, indent=2))
    chart(rows, out / "latest.png")
    print(text)
    return 1 if any(r.note.startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
