"""What crosses between the control process and the workers: counters add up, state copies."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from medlb.config.models import Config
from medlb.runtime import Runtime, SetState
from medlb.workers.channel import Channel, ChannelClosed
from medlb.workers.replica import counters, fold_counters


def runtime(mode: str = "mllp") -> Runtime:
    config = Config.model_validate({"services": [{
        "name": "adt", "mode": mode, "listen": ["127.0.0.1:2575"], "health": {"type": "none"},
        "servers": [{"name": "e1", "address": "127.0.0.1:2576"}, {"name": "e2", "address": "127.0.0.1:2577"}]}]})
    built = Runtime()
    built.load(config)
    return built


def worker_counts(total: int, active: int, messages: int) -> Runtime:
    worker = runtime()
    service = worker.services["adt"]
    service.total, service.active = total, active
    server = service.server("e1")
    assert server is not None and service.mllp_stats is not None
    server.total, server.active = total, active
    service.mllp_stats.messages[("ADT^A01", "e1")] += messages
    service.mllp_stats.in_flight = active
    service.mllp_stats.ack_latency.observe(0.001 * messages)
    return worker


def test_counters_of_all_workers_add_up_and_a_dead_workers_gauges_do_not():
    control = runtime()
    live = counters(worker_counts(10, 2, 7), {})
    dead = counters(worker_counts(5, 3, 4), {})

    fold_counters(control, [live], [dead])

    service = control.services["adt"]
    server = service.server("e1")
    assert server is not None and service.mllp_stats is not None
    assert (service.total, service.active) == (15, 2)  # the dead worker's open connections are gone
    assert (server.total, server.active) == (15, 2)
    assert service.mllp_stats.messages[("ADT^A01", "e1")] == 11
    assert service.mllp_stats.in_flight == 2
    assert service.mllp_stats.ack_latency.count == 2


def test_folding_twice_does_not_double_count():
    control = runtime()
    parts = [counters(worker_counts(10, 1, 3), {}), counters(worker_counts(20, 1, 3), {})]

    fold_counters(control, parts, [])
    fold_counters(control, parts, [])

    assert control.services["adt"].total == 30


def test_a_replica_takes_the_decided_state_with_its_side_effects():
    control, worker = runtime("tcp"), runtime("tcp")
    control.apply(SetState("adt", "e1", "halt", who="alice"))
    control.services["adt"].server("e2").health = "down"  # type: ignore[union-attr]
    control.services["adt"].pools["default"].refresh()

    worker.adopt(control.snapshot())

    e1, e2 = worker.services["adt"].server("e1"), worker.services["adt"].server("e2")
    assert e1 is not None and e2 is not None
    assert (e1.state, e1.state_changed_by, e2.health) == ("halt", "alice", "down")
    assert worker.services["adt"].pools["default"].active == "none"


def test_channel_carries_messages_and_descriptors_in_order():
    async def scenario() -> None:
        left, right = socket.socketpair()
        a, b = Channel(left), Channel(right)
        read_end, write_end = os.pipe()

        async def sender() -> None:
            await a.send({"type": "one", "big": b"x" * 3_000_000})  # more than the socket buffer holds
            await a.send({"type": "two"}, [read_end])

        sending = asyncio.ensure_future(sender())
        first, fds = await b.receive()
        assert first["type"] == "one" and len(first["big"]) == 3_000_000 and fds == []
        second, fds = await b.receive()
        await sending
        assert second["type"] == "two" and len(fds) == 1
        os.write(write_end, b"hi")
        assert os.read(fds[0], 2) == b"hi"  # the same pipe, through the channel
        for fd in (read_end, write_end, fds[0]):
            os.close(fd)
        a.close()
        with pytest.raises(ChannelClosed):
            await b.receive()
        b.close()

    asyncio.run(scenario())


def test_the_shared_cursor_numbers_the_picks_of_every_worker_once_with_or_without_libatomic():
    from medlb.workers import board

    fd = board.create(2)
    try:
        views = [board.Board(os.dup(fd), 2, index) for index in range(2)]
        cell = 2 * board.MAX_SLOTS + 5  # the cursors' row
        drawers = [board.SharedCursor(views[0], cell), board.SharedCursor(views[1], cell, fetch_add=None),
                   board.SharedCursor(views[1], cell)]
        numbers = [drawers[i % 3]() for i in range(30)]
        assert numbers == list(range(30))
    finally:
        os.close(fd)


def test_the_last_failures_of_every_worker_are_merged_by_time_and_bounded():
    workers = [runtime("dicom") for _ in range(2)]
    for index, worker in enumerate(workers):
        stats = worker.services["adt"].dicom
        for n in range(15):
            stats.reject("calling-ae-not-allowed", f"CT{index}", "MEDLB")
            stats.last_rejects.entries[-1]["at"] = n + index / 2  # interleaved in time
    control = runtime("dicom")

    fold_counters(control, [counters(worker, {}) for worker in workers], [])

    merged = control.services["adt"].dicom
    assert merged.rejects["calling-ae-not-allowed"] == 30
    assert [entry["at"] for entry in merged.last_rejects.entries] == [n / 2 for n in range(10, 30)]
    assert {entry["calling_ae"] for entry in merged.last_rejects.entries} == {"CT0", "CT1"}
