"""Health checks in a process short of descriptors: medlb's checkers run here, in the
test process, as the control process runs them, against real servers on loopback.

A check that cannot open its socket says nothing about the server: it is an error of
medlb, counted and logged, and the server's health stays as it was. A check whose
socket gets a descriptor number above 1023 (medlb raises its limit, so a busy process
hands out such numbers) still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
from typing import Iterator

import pytest

from dicom_helpers import DicomPeers
from helpers import LOOPBACK, free_port
from medlb.config import parse_config
from medlb.config.models import DicomEchoCheck, TcpCheck
from medlb.health import CHECKERS, HealthManager, run_check
from medlb.health.base import CheckTarget
from medlb.runtime import Runtime


@contextlib.contextmanager
def holding_descriptors(soft: int, count: int | None = None) -> Iterator[list[int]]:
    """With this process's soft limit at `soft`, hold `count` descriptors (None: every
    one the limit allows) until the block ends; then the limit is restored."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held: list[int] = []
    try:
        for _ in range(soft if count is None else count):
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE and count is None
                break
        else:
            assert count is not None, "the limit was never reached"
        yield held
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def out_of_descriptors() -> contextlib.AbstractContextManager[list[int]]:
    """This process has no descriptor left until the block ends."""
    return holding_descriptors(len(os.listdir("/proc/self/fd")) + 32)


def high_descriptor_numbers(count: int = 1100) -> contextlib.AbstractContextManager[list[int]]:
    """The next sockets this process opens get numbers above 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < count + 512:
        pytest.skip(f"the hard open-file limit ({hard}) is below {count + 512}")
    return holding_descriptors(max(soft, count + 512), count)


@pytest.fixture
def listening():
    """A real TCP server on loopback (accepts and closes)."""
    loop = asyncio.new_event_loop()
    port = free_port()
    server = loop.run_until_complete(asyncio.start_server(lambda r, w: w.close(), LOOPBACK, port))
    yield loop, port
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


def test_a_check_that_cannot_open_its_socket_is_a_local_error(listening):
    loop, port = listening
    target = CheckTarget("pacs", "pacs1", LOOPBACK, port)

    async def check_without_descriptors():
        with out_of_descriptors():
            return await run_check(CHECKERS["tcp"], target, TcpCheck(type="tcp"))

    outcome, _ = loop.run_until_complete(check_without_descriptors())
    good, _ = loop.run_until_complete(run_check(CHECKERS["tcp"], target, TcpCheck(type="tcp")))

    assert not outcome.ok and outcome.local_error == "EMFILE"
    assert good.ok and good.local_error is None


def test_checks_failing_for_a_local_reason_leave_health_as_it_was(listening):
    loop, port = listening
    runtime = Runtime()
    runtime.load(parse_config(f"""
services:
  - name: pacs
    listen: 127.0.0.1:{free_port()}
    health: {{type: tcp, interval: 300ms, timeout: 250ms, rise: 1, fall: 1}}
    servers: [{{name: pacs1, address: "{LOOPBACK}:{port}"}}]
""").config)
    server = runtime.services["pacs"].server("pacs1")
    assert server is not None
    health = HealthManager(runtime)

    async def scenario() -> None:
        health.sync()
        for _ in range(200):  # up to 10 s
            if server.health == "up":
                break
            await asyncio.sleep(0.05)
        assert server.health == "up"
        with out_of_descriptors():
            for _ in range(300):  # up to 15 s
                if health.errors[("pacs", "pacs1", "EMFILE")] >= 3:
                    break
                await asyncio.sleep(0.05)
        await health.stop()

    loop.run_until_complete(scenario())

    assert health.errors[("pacs", "pacs1", "EMFILE")] >= 3
    assert server.health == "up" and server.checks_failed == 0


def test_a_dicom_echo_check_works_with_descriptor_numbers_above_1023(tmp_path):
    peers = DicomPeers(tmp_path)
    try:
        port = peers.scp("pacs1", "PACS1")
        target = CheckTarget("pacs", "pacs1", LOOPBACK, port, ae_title="PACS1")
        config = DicomEchoCheck(type="dicom-echo", timeout=5.0, interval=10.0)
        loop = asyncio.new_event_loop()
        try:
            with high_descriptor_numbers() as held:
                assert max(held) > 1023
                outcome, _ = loop.run_until_complete(run_check(CHECKERS["dicom-echo"], target, config))
        finally:
            loop.close()
    finally:
        peers.stop_all()

    assert outcome.ok, outcome.reason
