"""The supervisor's rounds with real worker processes, driven from the test's own event
loop: what the API cannot show on its own (a worker stopped between prepare and
commit, the tasks left behind by restarts)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from typing import Any, Awaitable, Callable

import yaml

from helpers import LOOPBACK, free_ports
from medlb.config import parse_config
from medlb.config.models import Config
from medlb.runtime import Runtime
from medlb.workers import Workers


def config(port: int, weight: int = 1) -> Config:
    service = {"name": "pacs", "mode": "tcp", "listen": [f"{LOOPBACK}:{port}"], "health": {"type": "none"},
               "servers": [{"name": "A", "address": f"{LOOPBACK}:9", "weight": weight}]}
    return parse_config(yaml.safe_dump({"workers": 2, "services": [service]})).config


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.05)


def with_workers(port: int, scenario: Callable[[Runtime, Workers], Awaitable[None]]) -> None:
    async def run() -> None:
        runtime = Runtime()
        workers = Workers(runtime, 2)
        await workers.start()
        try:
            plan = runtime.plan(config(port))
            prepared = await workers.prepare(plan, None)
            runtime.commit(plan)
            assert await prepared.commit() == []
            await scenario(runtime, workers)
        finally:
            for worker in workers.procs:  # none may stay stopped, or stop() would wait on it
                if worker.process is not None and worker.process.returncode is None:
                    os.kill(worker.process.pid, signal.SIGCONT)
            await workers.stop(1)

    asyncio.run(run())


def test_a_commit_a_stopped_worker_has_not_confirmed_is_reported_and_it_follows_when_it_runs_again():
    (port,) = free_ports(1)

    async def scenario(runtime: Runtime, workers: Workers) -> None:
        plan = runtime.plan(config(port, weight=5))
        prepared = await workers.prepare(plan, None)
        stopped = workers.procs[1].process.pid  # type: ignore[union-attr]
        os.kill(stopped, signal.SIGSTOP)  # it prepared, and now cannot answer
        runtime.commit(plan)

        assert await prepared.commit() == [1]

        os.kill(stopped, signal.SIGCONT)
        assert await workers.settle(10) == []
        assert runtime.services["pacs"].server("A").weight == 5  # type: ignore[union-attr]

    with_workers(port, scenario)


def test_restarting_a_worker_again_and_again_leaves_no_task_behind():
    (port,) = free_ports(1)

    def tasks() -> int:
        gc.collect()
        return sum(1 for thing in gc.get_objects() if isinstance(thing, asyncio.Task))

    async def scenario(runtime: Runtime, workers: Workers) -> None:
        worker = workers.procs[1]

        async def kill_and_wait() -> None:
            old = worker.process.pid  # type: ignore[union-attr]
            os.kill(old, signal.SIGKILL)
            await until(lambda: worker.loaded and worker.process.pid != old, 60, "the worker to be replaced")  # type: ignore[union-attr]

        await kill_and_wait()
        before = tasks()
        for _ in range(3):
            await kill_and_wait()

        assert tasks() == before
        assert worker.restarts == 4

    with_workers(port, scenario)
