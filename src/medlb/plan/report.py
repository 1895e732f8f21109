"""`medlb plan` as a terminal reads it: aligned tables, then the recommendation and
the published figures with the reason for each difference."""

from __future__ import annotations

import textwrap

from medlb.plan.sizing import Plan


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """First column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _f(value: float, decimals: int = 0) -> str:
    return f"{value:,.{decimals}f}"


def _wrapped(text: str, first: str, rest: str, width: int = 100) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest)


def render(plan: Plan, source: str) -> str:
    lines = [f"medlb plan: {plan.site} ({source})", "", "Storage"]
    published = {c.figure: c for c in plan.published}
    rows = []
    for m in plan.modalities:
        row = published.get(f"{m.name} storage")
        rows.append([m.name, _f(m.images_per_study), f"{m.mb_per_image:g}", _f(m.mb_per_study, 2),
                     _f(m.studies_per_year), _f(m.mb_per_year), _f(m.gb_per_day, 1),
                     "" if row is None else _f(row.published) + ("" if row.same else " *")])
    total = published.get("storage, total")
    rows.append(["total", "", "", "", _f(plan.studies_per_year), _f(plan.mb_per_year), _f(plan.gb_per_day, 1),
                 "" if total is None else _f(total.published) + ("" if total.same else " *")])
    lines += _table(["modality", "images/study", "MB/image", "MB/study", "studies/year", "MB/year", "GB/day",
                     "published MB/year"], rows)
    lines += ["", f"Ingest: {_f(plan.mb_per_day)} MB a day ({_f(plan.gb_per_day)} GB); over {plan.ingest_hours:g} h "
                  f"a day {_f(plan.ingest_mbit_s)} Mbit/s and {_f(plan.ingest_images_per_s, 1)} images/s; the whole "
                  f"day in one hour {_f(plan.day_in_one_hour_mbit_s)} Mbit/s"]
    if plan.stations:
        lines += ["", "Retrieval"]
        rows = []
        for s in plan.stations:
            row = published.get(f"{s.name} retrieval")
            rows.append([s.name, _f(s.count), f"{s.studies_per_hour:g}", f"{s.mb_per_study:,g}", _f(s.mbit_s),
                         "" if row is None else _f(row.published) + ("" if row.same else " *")])
        total = published.get("retrieval, total")
        rows.append(["total", "", "", "", _f(plan.retrieval_mbit_s),
                     "" if total is None else _f(total.published) + ("" if total.same else " *")])
        lines += _table(["station class", "count", "studies/hour", "MB/study", "Mbit/s", "published Mbit/s"], rows)
    if plan.retrieval_to_ingest is not None:
        lines += ["", f"Retrieval / ingest: {plan.retrieval_to_ingest:,.1f}"]
    lines += ["", "Recommendation"]
    for line in plan.recommendation["lines"]:
        lines += _wrapped(line, "  - ", "    ")
    differing = [c for c in plan.published if not c.same]
    if plan.published:
        lines += ["", f"Published figures beside the computed ones (* above: {len(differing)} differ)"]
        lines += _table(["figure", "published", "computed", "unit", "difference"],
                        [[c.figure, _f(c.published, 1 if c.published < 100 else 0),
                          _f(c.computed, 1 if c.computed < 100 else 0), c.unit,
                          "same" if c.same else f"{c.computed - c.published:+,.0f}"] for c in plan.published])
        for c in differing:
            lines += [""] + _wrapped(f"{c.figure}: {c.explanation}.", "  ", "    ")
    return "\n".join(lines) + "\n"
