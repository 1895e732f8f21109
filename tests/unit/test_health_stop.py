"""Stopping (or reloading) ends every check loop, even one whose check answers at the
moment it is cancelled.

Python 3.11's `asyncio.wait_for` returns the inner result and drops a cancel that
arrives as the inner call completes (CPython gh-86296, fixed in 3.12). A check loop
that relied on the cancel alone kept checking for ever: `medlb demo` hung on Ctrl-C
about one time in fifteen, and a reload could leave the old check of a removed server
running beside the new one.
"""

from __future__ import annotations

import asyncio

import pytest

from helpers import free_port
from medlb import health as health_module
from medlb.config import parse_config
from medlb.health import HealthManager
from medlb.health.base import Outcome
from medlb.runtime import Runtime

CONFIG = """
services:
  - name: pacs
    listen: 127.0.0.1:{listen}
    health: {{type: tcp, interval: 5s, timeout: 4s, rise: 1, fall: 1}}
    servers: [{servers}]
"""


class GatedCheck:
    """A check that answers when the test says so, counting the checks made."""

    def __init__(self) -> None:
        self.gates: list[asyncio.Future[Outcome]] = []

    async def __call__(self, target: object, config: object) -> Outcome:
        gate: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        return await gate

    async def waiting(self, count: int) -> asyncio.Future[Outcome]:
        for _ in range(200):
            if len(self.gates) >= count and not self.gates[-1].done():
                return self.gates[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("the check never started")


def runtime_with(servers: str) -> Runtime:
    runtime = Runtime()
    runtime.load(parse_config(CONFIG.format(listen=free_port(), servers=servers)).config)
    return runtime


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> GatedCheck:
    check = GatedCheck()
    monkeypatch.setitem(health_module.CHECKERS, "tcp", check)
    return check


def test_stop_returns_when_the_check_answers_as_it_is_cancelled(gated):
    runtime = runtime_with('{name: pacs1, address: "127.0.0.1:1"}')
    manager = HealthManager(runtime)

    async def scenario() -> None:
        manager.sync()
        gate = await gated.waiting(1)
        gate.set_result(Outcome(True, ""))  # the answer and the stop in the same turn
        await asyncio.wait_for(manager.stop(), 3)

    asyncio.run(scenario())


def test_a_reload_that_removes_a_server_ends_its_checks(gated):
    runtime = runtime_with('{name: pacs1, address: "127.0.0.1:1"}, {name: pacs2, address: "127.0.0.1:2"}')
    manager = HealthManager(runtime)

    async def scenario() -> None:
        manager.sync()
        await gated.waiting(2)
        answering = [gate for gate in gated.gates if not gate.done()]
        runtime.load(parse_config(CONFIG.format(listen=free_port(),
                                                servers='{name: pacs1, address: "127.0.0.1:1"}')).config)
        for gate in answering:
            gate.set_result(Outcome(True, ""))
        manager.sync()  # pacs2 is gone: its loop must end although its check answered
        for gate in gated.gates:  # let pacs1's checks answer from now on
            if not gate.done():
                gate.set_result(Outcome(True, ""))
        await asyncio.sleep(0.5)
        running = {task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("check")}
        await asyncio.wait_for(manager.stop(), 3)
        assert running == {"check ('pacs', 'pacs1')"}

    asyncio.run(scenario())
