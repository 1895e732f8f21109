"""Runtime changes as sentences in the operator's words (the events list, the page)."""

from medlb.runtime import Failback
from medlb.runtime.describe import describe_change
from runtime_helpers import SERVICE, check, make_runtime, set_state


def manual():
    return make_runtime({"p1": 1}, {"b1": 1}, failback="manual", health={"type": "tcp", "rise": 1, "fall": 1})


def texts(changes, named_pools: bool = False) -> list[str]:
    return [describe_change(change, named_pools) for change in changes]


def test_a_failover_reads_as_what_happened_and_why():
    runtime = manual()
    assert texts(check(runtime, "p1", ok=False)) == [
        "Server p1 is down: refused",
        "New work goes to the backup cluster: no primary server is online and up",
        "Failed over to the backup cluster: no primary server online; it stays there until an operator "
        "fails back (failback: manual)"]


def test_an_operator_failback_and_state_say_who():
    runtime = manual()
    check(runtime, "p1", ok=False)
    check(runtime, "p1", ok=True)
    assert texts(runtime.apply(Failback(SERVICE, who="olga"))) == [
        "Failed back to the primary servers by olga",
        "New work goes to the primary servers again: a primary server is online and up"]
    assert texts(set_state(runtime, "p1", "drain"))[0] == \
        "Server p1 set to drain by alice (was online): no new work, open connections go on"


def test_pools_are_named_only_when_the_service_has_named_pools():
    runtime = manual()
    changes = check(runtime, "p1", ok=False)
    assert texts(changes, named_pools=True)[1].startswith("Pool default: new work goes to the backup cluster")
    assert texts(changes)[1].startswith("New work goes to the backup cluster")
