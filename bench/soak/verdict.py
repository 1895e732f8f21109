"""The soak's judgement, pure: from what the clients, the API poller and the chaos loop
recorded, decide each must and render the summary table. No I/O, no clocks.

A failed client attempt is classified by when it ran against when its service's servers
died and when the API showed them down:

- at a server's death (expected, reported): the attempt overlapped the time from a
  server's SIGKILL until one health interval after the API first showed it down (or
  after it was running again, if that came first). A connection to a server that dies
  fails; medlb cannot know before its checks tell it.
- after a server was marked down (must be 0): it started more than one health
  interval after the API showed a server of its service down, while it still was.
- with no server down (must be 0): neither; nothing explains it.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bench.soak.chaos import Log, Outage
from bench.soak.load import Attempt, Ledger
from bench.soak.watch import Change, Seen

UNITS = {"tcp": "connections (3 echo round trips each)", "dicom": "associations (2 C-STOREs each)",
         "mllp": "HL7 messages", "http": "requests"}
CATEGORIES = ("at_death", "after_down", "no_server_down")
#: RSS is judged over the last half of a run at least this long: in a shorter one the
#: start-up growth of a Python process (imports, caches, pools) would be taken for a leak.
RSS_MIN_SECONDS = 120.0
RSS_MAX_GROWTH = 0.05
EXAMPLES = 5


@dataclass
class Window:
    start: float
    end: float


def death_windows(outages: Iterable[Outage], changes: list[Change], interval: float, run_end: float,
                  service: str) -> list[Window]:
    windows = []
    for outage in outages:
        if outage.service != service:
            continue
        down = next((c.at for c in changes if c.service == service and c.server == outage.server
                     and c.what == "health" and c.value == "down" and c.at >= outage.killed_at), None)
        ends = [t for t in (down, outage.restarted_at) if t is not None]
        windows.append(Window(outage.killed_at, min(ends + [run_end]) + interval))
    return windows


def down_periods(changes: list[Change], service: str, run_end: float) -> list[Window]:
    """When the API showed a server of `service` down, from the first poll that showed it."""
    periods: list[Window] = []
    since: dict[str, float] = {}
    for change in changes:
        if change.service != service or change.what != "health":
            continue
        if change.value == "down":
            since.setdefault(change.server, change.at)
        elif change.server in since:
            periods.append(Window(since.pop(change.server), change.at))
    periods += [Window(start, run_end) for start in since.values()]
    return periods


def classify(attempt: Attempt, deaths: list[Window], downs: list[Window], interval: float) -> str:
    if any(attempt.started <= w.end and attempt.ended >= w.start for w in deaths):
        return "at_death"
    if any(w.start + interval < attempt.started < w.end for w in downs):
        return "after_down"
    return "no_server_down"


def percentile_ms(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] * 1000, 1)


def traffic(attempts: list[Attempt], outages: list[Outage], changes: list[Change], interval: float,
            run_start: float, run_end: float, modes: Iterable[str], service_name: Any) -> dict[str, dict[str, Any]]:
    rows = {}
    for mode in modes:
        service = service_name(mode)
        mine = [a for a in attempts if a.mode == mode]
        deaths = death_windows(outages, changes, interval, run_end, service)
        downs = down_periods(changes, service, run_end)
        failed: dict[str, list[Attempt]] = {c: [] for c in CATEGORIES}
        for attempt in mine:
            if not attempt.ok:
                failed[classify(attempt, deaths, downs, interval)].append(attempt)
        durations = [a.ended - a.started for a in mine if a.ok]
        rows[mode] = {
            "unit": UNITS[mode], "attempted": len(mine), "succeeded": sum(a.ok for a in mine),
            "failed": sum(not a.ok for a in mine), **{c: len(failed[c]) for c in CATEGORIES},
            "p50_ms": percentile_ms(durations, 0.5), "p99_ms": percentile_ms(durations, 0.99),
            "examples": {c: [f"t={a.started - run_start:.1f} s: {a.error}" for a in failed[c][:EXAMPLES]] for c in CATEGORIES},
        }
    return rows


def hl7(ledger: Ledger, engine_ids: list[str]) -> dict[str, Any]:
    """The ledger against what the engines logged (their logs survive a SIGKILL)."""
    ours = [i for i in engine_ids if i.startswith("SOAK")]
    received = set(ours)
    phantom = sorted(ledger.acked - received)
    return {**ledger.as_dict(), "aa_not_at_any_engine": len(phantom), "phantom_examples": phantom[:10],
            "received_by_engines": len(ours), "delivered_more_than_once": len(ours) - len(received)}


def rss(samples: dict[str, list[tuple[float, int]]], run_start: float, run_end: float) -> dict[str, dict[str, Any]]:
    """Per process: MiB at the start, the middle and the end, and growth over the last half
    (median of the samples around the middle against the median of the last tenth)."""
    judged = run_end - run_start >= RSS_MIN_SECONDS
    middle, tenth = (run_start + run_end) / 2, (run_end - run_start) / 10
    rows = {}
    for label, series in samples.items():
        sizes = [size for _, size in series]
        around_middle = [size for t, size in series if abs(t - middle) <= tenth / 2] or sizes[len(sizes) // 2:][:3]
        last = [size for t, size in series if t >= run_end - tenth] or sizes[-3:]
        mid_mib, end_mib = statistics.median(around_middle) / 2**20, statistics.median(last) / 2**20
        growth = (end_mib - mid_mib) / mid_mib if mid_mib else 0.0
        rows[label] = {"start_mib": round(sizes[0] / 2**20, 1), "middle_mib": round(mid_mib, 1),
                       "end_mib": round(end_mib, 1), "max_mib": round(max(sizes) / 2**20, 1),
                       "growth_last_half": round(growth, 4), "samples": len(sizes), "judged": judged}
    return rows


def musts(traffic_rows: dict[str, dict[str, Any]], hl7_row: dict[str, Any], rss_rows: dict[str, dict[str, Any]],
          log: Log, seen: Seen, medlb_exit: int | None, finished: bool) -> list[dict[str, Any]]:
    """Each must: name, ok (None: not judged in this run) and what broke it."""

    def must(name: str, broken: list[str], judged: bool = True) -> dict[str, Any]:
        return {"must": name, "ok": (not broken) if judged else None, "detail": broken[:EXAMPLES]}

    after_down = [f"{mode}: {row['after_down']}" for mode, row in traffic_rows.items() if row["after_down"]]
    unexplained = [f"{mode}: {row['no_server_down']}" for mode, row in traffic_rows.items() if row["no_server_down"]]
    idle = [mode for mode, row in traffic_rows.items() if not row["succeeded"]]
    grown = [f"{label}: {row['growth_last_half']:+.1%}" for label, row in rss_rows.items()
             if row["growth_last_half"] >= RSS_MAX_GROWTH]
    rss_judged = bool(rss_rows) and all(row["judged"] for row in rss_rows.values())
    alive = list(seen.pid_changes) + ([f"medlb exited with {medlb_exit} on SIGTERM"] if medlb_exit else [])
    return [
        must("every mode carried traffic", [f"{mode}: nothing succeeded" for mode in idle]),
        must("no HL7 message LOST (sent, neither ACK nor NAK)",
             [f"{hl7_row['lost']} lost"] if hl7_row["lost"] else []),
        must("every HL7 answer is for its own message, every AA from a real engine",
             ([f"{hl7_row['wrong_ack']} answers for another message"] if hl7_row["wrong_ack"] else [])
             + ([f"{hl7_row['aa_not_at_any_engine']} AA not logged by any engine"]
                if hl7_row["aa_not_at_any_engine"] else [])),
        must("no client failure after a server was marked down", after_down),
        must("no client failure with no server down", unexplained),
        must(f"RSS of every medlb process grows < {RSS_MAX_GROWTH:.0%} over the last half", grown,
             judged=rss_judged),
        must("reloads and state changes do what they say (a refused reload changes nothing)", log.broken),
        must("every medlb process stayed up and stopped cleanly", alive),
        must("the admin API answered every poll within 5 s", seen.api_failures),
        must("the run ended on time (no client or chaos step hung)", [] if finished else ["watchdog fired"]),
    ]


# --- rendering ---------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)


def markdown(result: dict[str, Any]) -> str:
    run = result["run"]
    broken = [m for m in result["musts"] if m["ok"] is False]
    lines = [
        "# medlb soak run",
        "",
        f"Run {run['date']} on {run['host']} ({run['machine']}, {run['cpus']} CPUs, Python {run['python']}): "
        f"{run['seconds']} s of load (`SOAK_SECONDS={run['seconds']}`), a chaos action every ~{run['chaos_every']} s, "
        f"one medlb with workers: {run['workers']}, health checks every {run['health_interval']} s. "
        f"Load average at the end: {run['load']}.",
        "",
        f"**Verdict: {'PASS' if not broken else f'FAIL ({len(broken)} must(s) broken)'}**",
        "",
        "| must | result | detail |",
        "|---|---|---|",
    ]
    for must in result["musts"]:
        verdict = {True: "ok", False: "**BROKEN**", None: "not judged (run shorter than "
                   f"{RSS_MIN_SECONDS:.0f} s)"}[must["ok"]]
        lines.append(f"| {must['must']} | {verdict} | {'; '.join(must['detail'])} |")
    lines += [
        "",
        "## Traffic",
        "",
        "Failures are classified by when they started: *at a server's death* (from its SIGKILL until one health "
        "interval after the API showed it down: expected), *after marked down* and *no server down* (both must "
        "be 0).",
        "",
        "| mode | unit | attempted | succeeded | failed | at a server's death | after marked down | no server down "
        "| p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in result["traffic"].items():
        lines.append(f"| {mode} | {row['unit']} | {row['attempted']} | {row['succeeded']} | {row['failed']} | "
                     f"{row['at_death']} | {row['after_down']} | {row['no_server_down']} | "
                     f"{_cell(row['p50_ms'])} | {_cell(row['p99_ms'])} |")
    h = result["hl7"]
    lines += [
        "",
        "## HL7 messages (mllp)",
        "",
        "| sent | ACKed AA by a real engine | NAKed by medlb (sender told) | LOST | answered for another message "
        "| AA not logged by any engine | delivered to engines more than once (allowed) |",
        "|---|---|---|---|---|---|---|",
        f"| {h['sent']} | {h['acked_aa']} | {h['naked']} | {h['lost']} | {h['wrong_ack']} | "
        f"{h['aa_not_at_any_engine']} | {h['delivered_more_than_once']} |",
        "",
        "## medlb memory (RSS, MiB)",
        "",
        "| process | start | middle | end | max | growth over the last half | samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in result["rss"].items():
        lines.append(f"| {label} | {row['start_mib']} | {row['middle_mib']} | {row['end_mib']} | {row['max_mib']} | "
                     f"{row['growth_last_half']:+.2%} | {row['samples']} |")
    chaos = result["chaos"]
    lines += [
        "",
        "## Chaos",
        "",
        "| action | done |",
        "|---|---|",
        *(f"| {kind} | {count} |" for kind, count in sorted(chaos["counts"].items())),
        f"| reloads taken | {chaos['reloads']['ok']} |",
        f"| reloads refused | {chaos['reloads']['refused']} |",
        "",
        f"API polls: {result['api']['polls']}, failed {len(result['api']['failures'])}, slowest "
        f"{result['api']['slowest_s']} s.",
    ]
    problems = _problems(result)
    if problems:
        lines += ["", "## Details", "", *problems]
    return "\n".join(lines) + "\n"


def _problems(result: dict[str, Any]) -> list[str]:
    lines = []
    for mode, row in result["traffic"].items():
        for category in CATEGORIES:
            for example in row["examples"][category]:
                lines.append(f"- {mode}, {category.replace('_', ' ')}: {example}")
    h = result["hl7"]
    for key in ("lost_examples", "wrong_examples", "nak_examples"):
        for control_id, what in h[key].items():
            lines.append(f"- HL7 {key.split('_')[0]} {control_id}: {what}")
    lines += [f"- HL7 AA not logged by any engine: {i}" for i in h["phantom_examples"]]
    lines += [f"- control plane: {b}" for b in result["chaos"]["broken"]]
    lines += [f"- harness: {b}" for b in result["chaos"]["harness"]]
    lines += [f"- medlb process: {p}" for p in result["pid_changes"]]
    lines += [f"- API: {f}" for f in result["api"]["failures"][:EXAMPLES]]
    return lines
