"""`workers: N`: several data-plane processes behind one control process, as an operator sees them."""

from __future__ import annotations

import asyncio
import copy
import os
import resource
import signal
import socket
import time
from collections import Counter
from pathlib import Path

from helpers import LOOPBACK, connect, free_ports, server, service, wait_until, who_answers
from test_ctl import ctl
from test_mllp_mode import adt, mllp_service, received, send_batch


def worker_pids(lb) -> list[int]:  # type: ignore[no-untyped-def]
    return [p["pid"] for p in lb.api("GET", "/api/v1/workers").json()["processes"]]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is gone for our purposes.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def two_worker_tcp(medlb, backends, **extra):  # type: ignore[no-untyped-def]
    vip, a, b = free_ports(3)
    backends.start("A", a)
    backends.start("B", b)
    lb = medlb([service("pacs", vip, [server("A", a), server("B", b)], **extra)], workers=2)
    wait_until(lambda: all(s["available"] for s in lb.service("pacs")["servers"]), 10, what="every server up")
    return lb, vip


def test_two_workers_share_the_connections_and_the_counters_add_up(medlb, backends):
    lb, vip = two_worker_tcp(medlb, backends)

    answers = Counter(who_answers(vip) for _ in range(60))

    assert answers["A"] + answers["B"] == 60 and answers["A"] > 0 and answers["B"] > 0
    view = lb.service("pacs")
    assert view["total_connections"] == 60
    assert {s["name"]: s["total_connections"] for s in view["servers"]} == {"A": answers["A"], "B": answers["B"]}
    processes = lb.api("GET", "/api/v1/workers").json()["processes"]
    assert len(processes) == 2 and all(p["alive"] for p in processes)
    assert all(p["total_connections"] > 0 for p in processes), "the kernel spread connections over both workers"
    assert sum(p["total_connections"] for p in processes) == 60
    metrics = lb.api("GET", "/metrics").text
    assert 'medlb_service_connections_total{mode="tcp",service="pacs"} 60.0' in metrics


def test_a_halt_is_in_force_in_every_worker_when_the_api_answers(medlb, backends):
    lb, vip = two_worker_tcp(medlb, backends)

    for round_ in range(3):
        assert lb.set_state("pacs", "A", "halt").status_code == 200
        assert Counter(who_answers(vip) for _ in range(30)) == {"B": 30}, f"round {round_}"
        assert lb.set_state("pacs", "A", "online").status_code == 200
        lb.set_state("pacs", "B", "halt")
        assert Counter(who_answers(vip) for _ in range(30)) == {"A": 30}, f"round {round_}"
        lb.set_state("pacs", "B", "online")


def test_a_server_found_down_by_the_control_process_is_avoided_by_every_worker(medlb, backends):
    lb, vip = two_worker_tcp(medlb, backends)

    backends.kill("B")
    lb.wait_health("pacs", "B", "down", 10)

    assert Counter(who_answers(vip) for _ in range(30)) == {"A": 30}


def test_source_ip_persistence_holds_across_workers(medlb, backends):
    lb, vip = two_worker_tcp(medlb, backends, persistence={"type": "source-ip", "timeout": "5m"})

    homes = {}
    for client in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        seen = set()
        for _ in range(12):  # a new source port each time: the four-tuple hash would spread these
            sock = socket.create_connection((LOOPBACK, vip), timeout=5, source_address=(client, 0))
            seen.add(sock.recv(64).decode().strip())
            sock.close()
        assert len(seen) == 1, f"{client} reached {seen}"
        homes[client] = seen.pop()
    assert set(homes.values()) <= {"A", "B"}


def test_a_worker_that_dies_is_replaced_and_its_counts_are_kept(medlb, backends):
    lb, vip = two_worker_tcp(medlb, backends)
    for _ in range(20):
        assert who_answers(vip) in {"A", "B"}
    before = lb.service("pacs")["total_connections"]
    victim = worker_pids(lb)[1]

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: (w := lb.api("GET", "/api/v1/workers").json()["processes"][1])["restarts"] == 1
               and w["alive"] and w["pid"] != victim, 10, what="the worker to be started again")

    assert Counter(bool(who_answers(vip)) for _ in range(40)) == {True: 40}
    assert lb.service("pacs")["total_connections"] == before + 40
    assert "worker_exited" in lb.log()
    shown = ctl(lb, "workers")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "workers: 2" and lines[1].split()[:4] == ["WORKER", "PID", "ALIVE", "RESTARTS"]
    assert lines[-1].split()[:4] == ["1", str(worker_pids(lb)[1]), "yes", "1"]
    metrics = lb.api("GET", "/metrics").text
    assert 'medlb_worker_restarts_total{worker="1"} 1.0' in metrics and 'medlb_worker_up{worker="1"} 1.0' in metrics


def test_stopping_medlb_stops_its_workers_and_a_lost_control_process_takes_them_along(medlb, backends):
    lb, vip = two_worker_tcp(medlb, backends)
    pids = worker_pids(lb)

    assert lb.stop() == 0
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, what="the workers to exit with medlb")

    lb.start()
    wait_until(lambda: all(s["available"] for s in lb.service("pacs")["servers"]), 10, what="every server up")
    pids = worker_pids(lb)
    assert lb.proc is not None
    lb.proc.kill()  # SIGKILL: no goodbye to the workers
    lb.proc.wait()
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, what="orphaned workers to exit")
    lb.proc = None
    assert who_answers(vip) == ""


def test_reload_opens_and_closes_ports_in_every_worker(medlb, backends):
    vip, extra, a = free_ports(3)
    backends.start("A", a)
    lb = medlb([service("pacs", vip, [server("A", a)])], workers=2)
    config = dict(lb.config)

    config["services"] = [service("pacs", extra, [server("A", a)])]
    lb.write_config(config)
    assert lb.api("POST", "/api/v1/reload").status_code == 200

    assert Counter(who_answers(extra) for _ in range(20)) == {"A": 20}
    assert who_answers(vip) == ""
    with socket.socket() as probe:
        assert probe.connect_ex((LOOPBACK, vip)) != 0, "the old port is closed in every worker"


def test_a_port_in_use_is_refused_at_start_with_workers(medlb, backends):
    vip, a = free_ports(2)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as HAProxy binds
    holder.bind((LOOPBACK, vip))
    holder.listen()
    try:
        lb = medlb([service("pacs", vip, [server("A", a)])], start=False, workers=2)
        lb.start(wait=False)
        assert lb.proc is not None and lb.proc.wait(20) == 1
        assert "already in use" in lb.log()
    finally:
        holder.close()


def test_hl7_with_workers_keeps_every_message_and_its_order(medlb, backends, tmp_path: Path):
    vip, port = free_ports(2)
    backends.start_mllp("E1", port, tmp_path / "received.jsonl")
    lb = medlb([mllp_service("adt", vip, [server("E1", port)])], workers=2)
    wait_until(lambda: lb.service("adt")["servers_up"] == 1, 10, what="the engine up")
    messages = [adt(f"W{i:04d}", "P1", "A08") for i in range(50)]

    answers = asyncio.run(send_batch(vip, messages))

    assert [str(a.segment("MSA")[1]) for a in answers] == ["AA"] * 50
    assert [str(a.segment("MSA")[2]) for a in answers] == [f"W{i:04d}" for i in range(50)]
    assert lb.service("adt")["mllp"]["messages"] == 50
    assert [r["id"] for r in received(tmp_path / "received.jsonl")] == [f"W{i:04d}" for i in range(50)]


def test_propagation_time_is_reported_not_asserted(medlb, backends):
    """How long a state change takes to reach the workers, printed for the notes (-s)."""
    lb, vip = two_worker_tcp(medlb, backends)
    took = []
    for state in ("drain", "online") * 5:
        started = time.perf_counter()
        assert lb.set_state("pacs", "A", state).status_code == 200
        took.append(time.perf_counter() - started)
    took.sort()
    print(f"\nAPI state change answered (stored, audited, in force in 2 workers): "
          f"median {took[len(took) // 2] * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms")


def test_max_connections_holds_for_all_workers_together(medlb, backends):
    lb, vip = two_worker_tcp(medlb, backends, limits={"max_connections": 4})
    held = [connect(vip) for _ in range(4)]
    try:
        assert all(name in {"A", "B"} for _, name in held)

        assert [who_answers(vip) for _ in range(6)] == [""] * 6  # wherever the kernel puts them

        assert lb.service("pacs")["refused_connections"] == 6
        assert sum(p["active_connections"] for p in lb.api("GET", "/api/v1/workers").json()["processes"]) == 4
    finally:
        for sock, _ in held:
            sock.close()
    wait_until(lambda: who_answers(vip) in {"A", "B"}, 5, what="room again once the connections closed")


def test_hl7_ordered_per_connection_is_served_by_every_worker(medlb, backends, tmp_path: Path):
    vip, port = free_ports(2)
    backends.start_mllp("E1", port, tmp_path / "received.jsonl")
    lb = medlb([mllp_service("adt", vip, [server("E1", port)], ordering_key="connection")], workers=2)
    wait_until(lambda: lb.service("adt")["servers_up"] == 1, 10, what="the engine up")

    async def senders() -> list[list[str]]:
        batches = [[adt(f"S{s:02d}M{i:02d}", f"P{i}", "A08") for i in range(10)] for s in range(12)]
        answers = await asyncio.gather(*(send_batch(vip, batch) for batch in batches))
        return [[str(a.segment("MSA")[2]) for a in answer] for answer in answers]

    acked = asyncio.run(senders())

    assert acked == [[f"S{s:02d}M{i:02d}" for i in range(10)] for s in range(12)]
    arrived = [r["id"] for r in received(tmp_path / "received.jsonl")]
    for s in range(12):
        assert [m for m in arrived if m.startswith(f"S{s:02d}")] == [f"S{s:02d}M{i:02d}" for i in range(10)]
    processes = lb.api("GET", "/api/v1/workers").json()["processes"]
    assert all(p["total_connections"] > 0 for p in processes), processes


def lowest_free_descriptor(pid: int) -> int:
    """The descriptor number a process would get next: with its limit set there, it can open none."""
    taken = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    return next(fd for fd in range(len(taken) + 1) if fd not in taken)


def test_a_reload_one_worker_cannot_apply_is_refused_in_every_worker(medlb, backends):
    vip, extra, a, b = free_ports(4)
    backends.start("A", a)
    backends.start("B", b)
    lb = medlb([service("pacs", vip, [server("A", a)])], workers=2)
    wait_until(lambda: lb.service("pacs")["servers_up"] == 1, 10, what="A up")
    config = copy.deepcopy(lb.config)
    config["services"][0]["listen"].append(f"{LOOPBACK}:{extra}")
    config["services"][0]["servers"] = [server("B", b)]
    lb.write_config(config)
    # Worker 1 out of descriptors: it cannot take the new address's socket; worker 0 can.
    victim = worker_pids(lb)[1]
    soft, hard = resource.prlimit(victim, resource.RLIMIT_NOFILE)
    resource.prlimit(victim, resource.RLIMIT_NOFILE, (lowest_free_descriptor(victim), hard))
    try:
        response = lb.api("POST", "/api/v1/reload")
    finally:
        resource.prlimit(victim, resource.RLIMIT_NOFILE, (soft, hard))

    assert response.status_code == 422, response.text
    problems = response.json()["problems"]
    assert any("worker 1" in p and "open files" in p for p in problems), problems
    assert "worker_load_failed" not in lb.log()
    assert [s["name"] for s in lb.service("pacs")["servers"]] == ["A"]
    before = [p["total_connections"] for p in lb.api("GET", "/api/v1/workers").json()["processes"]]
    assert Counter(who_answers(vip) for _ in range(40)) == {"A": 40}, "both workers still send to A"
    after = [p["total_connections"] for p in lb.api("GET", "/api/v1/workers").json()["processes"]]
    assert all(x > y for x, y in zip(after, before)), "the kernel spread the connections over both workers"
    with socket.socket() as probe:
        probe.bind((LOOPBACK, extra))  # no process holds the refused address

    assert lb.api("POST", "/api/v1/reload").status_code == 200  # with its descriptors back, it goes through
    assert Counter(who_answers(extra) for _ in range(20)) == {"B": 20}
    assert Counter(who_answers(vip) for _ in range(20)) == {"B": 20}


def test_an_action_a_stopped_worker_cannot_confirm_is_answered_202_with_that_worker(medlb, backends):
    dr = free_ports(1)[0]
    backends.start("DR", dr)
    lb, vip = two_worker_tcp(medlb, backends, backup=[server("DR", dr)], failback="manual")
    stopped = worker_pids(lb)[1]
    text = lb.config_path.read_text()

    os.kill(stopped, signal.SIGSTOP)  # it cannot answer, as a worker stuck in swap
    try:
        response = lb.set_state("pacs", "A", "drain")
        assert response.status_code == 202, response.text
        assert response.json()["settled"] is False and response.json()["workers_not_answered"] == [1]
        assert response.json()["server"]["state"] == "drain"
        response = lb.api("POST", "/api/v1/services/pacs/pools/default/state", json={"state": "drain"})
        assert (response.status_code, response.json()["workers_not_answered"]) == (202, [1])
        assert response.json()["service"]["active_pool"] == "backup"
        response = lb.api("POST", "/api/v1/services/pacs/pools/default/state", json={"state": "online"})
        assert response.status_code == 202 and response.json()["service"]["active_pool"] == "backup"
        response = lb.api("POST", "/api/v1/services/pacs/failback", json={})
        assert (response.status_code, response.json()["workers_not_answered"]) == (202, [1])
        shown = ctl(lb, "online", "pacs", "A")
        assert shown.returncode == 3 and "worker 1" in shown.stderr, (shown.returncode, shown.stderr)
        assert lb.server("pacs", "A")["state"] == "online"

        # A reload must be prepared by every worker first: one that cannot answer refuses it.
        response = lb.api("POST", "/api/v1/reload")
        assert response.status_code == 503, response.text
        assert response.json()["workers_not_answered"] == [1]
        assert any("worker 1" in p for p in response.json()["problems"])
        response = lb.api("POST", "/api/v1/config/apply", json={"text": text + "\n# applied\n"})
        assert response.status_code == 503, response.text
        assert lb.config_path.read_text() == text, "a refused apply puts the old file back"
    finally:
        os.kill(stopped, signal.SIGCONT)

    wait_until(lambda: lb.set_state("pacs", "B", "online").status_code == 200, 10, what="worker 1 to confirm again")
    assert lb.api("POST", "/api/v1/reload").json()["settled"] is True
    assert Counter(who_answers(vip) for _ in range(20)).keys() == {"A", "B"}


def test_round_robin_rotates_over_every_worker_together(medlb, backends):
    """Each worker used to keep its own rotation, so nine clients over three equal
    servers landed 4/3/2; the picks are now numbered over both workers."""
    vip, *ports = free_ports(4)
    for name, port in zip("ABC", ports):
        backends.start(name, port)
    lb = medlb([service("pacs", vip, [server(n, p) for n, p in zip("ABC", ports)], scheduler="roundrobin")],
               workers=2)
    wait_until(lambda: all(s["available"] for s in lb.service("pacs")["servers"]), 10, what="every server up")

    answers = [who_answers(vip) for _ in range(30)]

    assert Counter(answers) == {"A": 10, "B": 10, "C": 10}
    assert all(set(answers[i:i + 3]) == {"A", "B", "C"} for i in range(0, 30, 3)), answers
    served = [p["total_connections"] for p in lb.api("GET", "/api/v1/workers").json()["processes"]]
    assert sum(served) == 30
