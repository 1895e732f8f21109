"""The soak's judgement (bench/soak/verdict.py): which client failures medlb is to blame
for, and when memory counts as growing. Pure: times are made up, no process runs."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `bench` lives beside `src`

from bench.soak import verdict  # noqa: E402
from bench.soak.chaos import Log, Outage  # noqa: E402
from bench.soak.load import Attempt, Ledger  # noqa: E402
from bench.soak.watch import Change, Seen  # noqa: E402

INTERVAL = 1.0


def failure(started: float, ended: float | None = None) -> Attempt:
    return Attempt("tcp", started, started + 0.1 if ended is None else ended, ok=False, error="reset")


def classified(attempts: list[Attempt], outages: list[Outage], changes: list[Change]) -> dict[str, int]:
    row = verdict.traffic(attempts, outages, changes, INTERVAL, 0.0, 100.0, ["tcp"], lambda mode: f"soak-{mode}")
    return {category: row["tcp"][category] for category in verdict.CATEGORIES}


def down_then_up(server: str, down: float, up: float) -> list[Change]:
    return [Change(down, "soak-tcp", server, "health", "down"), Change(up, "soak-tcp", server, "health", "up")]


def test_a_failure_until_one_interval_after_the_api_showed_the_server_down_is_expected():
    outages = [Outage("soak-tcp", "t1", killed_at=10.0, restarted_at=20.0)]
    changes = down_then_up("t1", down=12.0, up=23.0)
    attempts = [failure(9.5, 10.2),  # in flight when the server died
                failure(12.9),       # before the checks' news had surely reached every worker
                failure(13.5),       # more than one interval after the API showed it down
                failure(22.5)]       # restarted, not yet up again: medlb still knows it is down

    assert classified(attempts, outages, changes) == {"at_death": 2, "after_down": 2, "no_server_down": 0}


def test_a_failure_with_no_server_dying_or_down_is_unexplained():
    outages = [Outage("soak-tcp", "t1", killed_at=10.0, restarted_at=20.0)]
    changes = down_then_up("t1", down=12.0, up=23.0)
    other_service = [Outage("soak-http", "h1", killed_at=40.0, restarted_at=45.0)]

    assert classified([failure(5.0), failure(30.0), failure(41.0)], outages + other_service, changes) == {
        "at_death": 0, "after_down": 0, "no_server_down": 3}


def test_a_server_started_again_before_it_was_marked_down_closes_its_window_then():
    outages = [Outage("soak-tcp", "t1", killed_at=10.0, restarted_at=11.0)]

    assert classified([failure(11.5), failure(12.5)], outages, []) == {
        "at_death": 1, "after_down": 0, "no_server_down": 1}


def musts(lost: int = 0, growth_mib: float = 0.0, seconds: float = 600.0) -> dict[str, bool | None]:
    ledger = Ledger(sent={f"SOAK0-{i}": 0.0 for i in range(10)}, acked={f"SOAK0-{i}" for i in range(10 - lost)})
    ledger.lost = {f"SOAK0-{i}": "closed" for i in range(10 - lost, 10)}
    samples = {"control": [(t, int((100 + (growth_mib if t > seconds * 0.9 else 0)) * 2**20))
                           for t in range(0, int(seconds) + 1, 2)]}
    rows = {"tcp": {"succeeded": 5, "after_down": 0, "no_server_down": 0}}
    judged = verdict.musts(rows, verdict.hl7(ledger, [f"SOAK0-{i}" for i in range(10)]),
                           verdict.rss(samples, 0.0, seconds), Log(), Seen(), 0, True)
    return {m["must"]: m["ok"] for m in judged}


def test_a_lost_hl7_message_breaks_a_must():
    assert all(ok is not False for ok in musts().values())
    broken = [name for name, ok in musts(lost=1).items() if ok is False]
    assert broken == ["no HL7 message LOST (sent, neither ACK nor NAK)"]


def test_rss_growth_of_five_percent_over_the_last_half_breaks_a_must_in_a_long_run_only():
    name = "RSS of every medlb process grows < 5% over the last half"
    assert musts(growth_mib=4.0)[name] is True
    assert musts(growth_mib=5.0)[name] is False
    assert musts(growth_mib=5.0, seconds=60.0)[name] is None  # start-up growth, not judged
