"""The MLLP dispatcher's lifetime: a real listener in this process, a real sender socket."""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref

import yaml

from helpers import LOOPBACK, free_port
from medlb.config import parse_config
from medlb.proxy.listeners import Listeners
from medlb.runtime import Runtime


def config(port: int, with_hl7: bool):
    services = [{"name": "tcp", "listen": [f"{LOOPBACK}:{free_port()}"], "servers": [{"name": "t1", "address": "t1.example:1"}]}]
    if with_hl7:
        services.append({"name": "adt", "mode": "mllp", "listen": [f"{LOOPBACK}:{port}"],
                         "servers": [{"name": "e1", "address": "e1.example:2575"}]})
    return parse_config(yaml.safe_dump({"services": services})).config


async def load(runtime: Runtime, listeners: Listeners, config) -> None:
    """A (re)load as medlb does it: plan, the listeners prepare, commit both."""
    plan = runtime.plan(config)
    prepared = await listeners.prepare(plan, None)
    runtime.commit(plan)
    await prepared.commit()


def test_a_service_removed_by_a_reload_leaves_no_dispatcher_behind():
    port = free_port()

    async def scenario() -> tuple[Runtime, weakref.ref]:
        runtime = Runtime()
        listeners = Listeners(runtime)
        await load(runtime, listeners, config(port, with_hl7=True))
        loop = asyncio.get_running_loop()
        sender = socket.socket()
        sender.setblocking(False)
        await loop.sock_connect(sender, (LOOPBACK, port))  # a sender connects: the dispatcher is made
        async with asyncio.timeout(10):
            while not listeners.connections:
                await asyncio.sleep(0.01)
        dispatcher = weakref.ref(listeners.handles["adt"].dispatcher)
        sender.close()
        async with asyncio.timeout(10):
            while listeners.connections:
                await asyncio.sleep(0.01)
        await load(runtime, listeners, config(port, with_hl7=False))  # the reload removes the service
        await listeners.stop(1)
        return runtime, dispatcher

    runtime, dispatcher = asyncio.run(scenario())  # the runtime lives on, as in medlb
    gc.collect()
    assert "adt" not in runtime.services
    assert dispatcher() is None, "the runtime still holds the removed service's dispatcher"
