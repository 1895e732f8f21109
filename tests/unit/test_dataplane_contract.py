"""Every mode's client connection keeps the data-plane contract (medlb/dataplane.py):
the listeners' registry, idle sweep, on_halt and stop treat them all alike."""

from __future__ import annotations

import asyncio
import os

import pytest

from medlb.config.models import Config
from medlb.dataplane import Connection, DataPlane
from medlb.proxy.listeners import PROTOCOLS, Listeners
from medlb.proxy.tcp import ServiceHandle
from medlb.runtime import Runtime
from medlb.workers.supervisor import Workers

MODES = {"tcp": {}, "dicom": {}, "mllp": {}, "mllp-connection": {"mllp": {"balance": "connection"}},
         "http": {"http": {}}}


def runtime() -> Runtime:
    services = [{"name": name, "mode": name.split("-")[0], "listen": [f"127.0.0.1:{2000 + i}"], **extra,
                 "health": {"type": "none"}, "servers": [{"name": "s1", "address": "127.0.0.1:1"}]}
                for i, (name, extra) in enumerate(MODES.items())]
    built = Runtime()
    built.load(Config.model_validate({"services": services}))
    return built


@pytest.mark.parametrize("name", MODES)
def test_each_modes_client_is_a_connection_the_registry_can_hold(name: str):
    async def scenario() -> None:
        model = runtime()
        service = model.services[name]
        connection = PROTOCOLS[service.mode](ServiceHandle(service, model, set()), 2000)
        assert isinstance(connection, Connection), type(connection).__name__
        assert connection.server is None  # not relayed anywhere before it is admitted

    asyncio.run(scenario())


def test_the_listeners_and_the_workers_are_data_planes():
    model = Runtime()
    assert isinstance(Listeners(model), DataPlane)
    workers = Workers(model, 2)
    try:
        assert isinstance(workers, DataPlane)
    finally:
        os.close(workers.board_fd)
