"""Failover to the backup cluster, failback (auto and manual), and connect-failure retries."""

from medlb.runtime import Failback, SetFailedOver
from runtime_helpers import SERVICE, check, make_runtime, pick, pick_many, server, set_state, svc

PRIMARY = {"p1": 1, "p2": 1}
BACKUP = {"b1": 1, "b2": 1}


def runtime_with_backup(failback: str = "auto"):
    return make_runtime(PRIMARY, BACKUP, failback=failback, health={"type": "tcp", "rise": 2, "fall": 1})


def down(runtime, *names):
    for name in names:
        check(runtime, name, ok=False)


def up(runtime, *names):
    for name in names:
        check(runtime, name, ok=True, times=2)


def active_pool(runtime) -> str:
    return svc(runtime).active_pool


def test_backup_takes_no_work_while_a_primary_can():
    runtime = runtime_with_backup()
    down(runtime, "p1")
    assert set(pick_many(runtime, 10)) == {"p2"}
    assert active_pool(runtime) == "primary"


def test_all_primaries_down_goes_to_backup():
    runtime = runtime_with_backup()
    down(runtime, "p1", "p2")
    assert active_pool(runtime) == "backup"
    assert set(pick_many(runtime, 10)) == {"b1", "b2"}


def test_all_primaries_halted_goes_to_backup():
    runtime = runtime_with_backup()
    set_state(runtime, "p1", "halt")
    set_state(runtime, "p2", "drain")
    assert active_pool(runtime) == "backup"
    assert set(pick_many(runtime, 10)) == {"b1", "b2"}


def test_auto_failback_returns_as_soon_as_one_primary_recovers():
    runtime = runtime_with_backup("auto")
    down(runtime, "p1", "p2")
    up(runtime, "p2")
    assert active_pool(runtime) == "primary"
    assert set(pick_many(runtime, 10)) == {"p2"}


def test_manual_failback_stays_on_backup_after_recovery():
    runtime = runtime_with_backup("manual")
    down(runtime, "p1", "p2")
    up(runtime, "p1", "p2")
    assert active_pool(runtime) == "backup"
    assert set(pick_many(runtime, 10)) == {"b1", "b2"}


def test_manual_failback_returns_to_primary_when_the_operator_says_so():
    runtime = runtime_with_backup("manual")
    down(runtime, "p1", "p2")
    up(runtime, "p1")
    changes = runtime.apply(Failback(SERVICE, who="alice"))
    assert active_pool(runtime) == "primary"
    assert set(pick_many(runtime, 10)) == {"p1"}
    assert ("pool", "backup", "primary") in [(c.kind, c.old, c.new) for c in changes]
    assert all(c.who == "alice" for c in changes)


def test_manual_failback_while_no_primary_can_serve_stays_on_backup():
    runtime = runtime_with_backup("manual")
    down(runtime, "p1", "p2")
    runtime.apply(Failback(SERVICE))
    assert active_pool(runtime) == "backup"
    up(runtime, "p1")
    assert active_pool(runtime) == "backup"  # still failed over: recovery alone is not enough


def test_manual_failback_goes_to_primary_if_the_backup_fails_too():
    runtime = runtime_with_backup("manual")
    down(runtime, "p1", "p2")
    up(runtime, "p1")
    assert active_pool(runtime) == "backup"
    down(runtime, "b1", "b2")
    assert active_pool(runtime) == "primary"
    assert set(pick_many(runtime, 10)) == {"p1"}


def test_failback_on_a_pool_that_is_not_failed_over_changes_nothing():
    runtime = runtime_with_backup("manual")
    assert runtime.apply(Failback(SERVICE)) == []
    assert active_pool(runtime) == "primary"


def test_stored_failed_over_flag_is_restored_at_start():
    runtime = runtime_with_backup("manual")
    runtime.apply(SetFailedOver(SERVICE, "default", True))
    assert active_pool(runtime) == "backup"
    assert set(pick_many(runtime, 10)) == {"b1", "b2"}


def test_everything_down_picks_nothing():
    runtime = runtime_with_backup()
    down(runtime, "p1", "p2", "b1", "b2")
    assert active_pool(runtime) == "none"
    assert pick(runtime) is None


def test_backup_recovering_from_none_serves_again():
    runtime = runtime_with_backup()
    down(runtime, "p1", "p2", "b1", "b2")
    up(runtime, "b2")
    assert active_pool(runtime) == "backup"
    assert pick(runtime) == "b2"


def test_no_backup_and_all_primaries_down_picks_nothing():
    runtime = make_runtime(PRIMARY)
    down(runtime, "p1", "p2")
    assert active_pool(runtime) == "none"
    assert pick(runtime) is None


# --- connect failures: exclude -------------------------------------------------------


def test_exclude_falls_through_to_the_other_primary():
    runtime = runtime_with_backup()
    p1 = server(runtime, "p1")
    assert {pick(runtime, exclude={p1}) for _ in range(10)} == {"p2"}


def test_exclude_of_every_primary_falls_through_to_the_backup():
    runtime = runtime_with_backup()
    tried = {server(runtime, "p1"), server(runtime, "p2")}
    assert {pick(runtime, exclude=tried) for _ in range(10)} == {"b1", "b2"}
    assert active_pool(runtime) == "primary"  # a connect failure is not a health change


def test_exclude_of_every_server_picks_nothing():
    runtime = runtime_with_backup()
    tried = {server(runtime, name) for name in ("p1", "p2", "b1", "b2")}
    assert pick(runtime, exclude=tried) is None


def test_retry_sequence_tries_each_server_once():
    runtime = runtime_with_backup()
    tried = set()
    for _ in range(4):
        chosen = svc(runtime).pick("192.0.2.1", exclude=tried)
        assert chosen is not None and chosen not in tried
        tried.add(chosen)
    assert {s.name for s in tried} == {"p1", "p2", "b1", "b2"}
    assert svc(runtime).pick("192.0.2.1", exclude=tried) is None


def test_exclude_overrides_persistence():
    runtime = make_runtime(PRIMARY, BACKUP, persistence="source-ip")
    stuck = svc(runtime).pick("192.0.2.7")
    other = svc(runtime).pick("192.0.2.7", exclude={stuck})
    assert other is not None and other is not stuck


def test_failback_while_no_primary_can_serve_changes_nothing_and_says_why():
    runtime = runtime_with_backup("manual")
    down(runtime, "p1", "p2")
    pool = svc(runtime).pools["default"]

    assert runtime.apply(Failback(SERVICE, who="alice")) == []  # no flag flipped off and on again
    assert pool.failback_refusal() == "no primary server is online: staying on the backup cluster"
    assert pool.failed_over and active_pool(runtime) == "backup"


def test_failback_without_a_failover_says_there_is_nothing_to_fail_back():
    pool = svc(runtime_with_backup("manual")).pools["default"]
    assert pool.failback_refusal() == "not failed over: nothing to fail back"
