"""One data-plane worker: relays connections on the sockets the control process gave it.

A worker holds a replica of the runtime built from the same config as the control
process's. It runs no health checks, no admin API and no store: it copies the state the
control process decided, answers requests for its counters, and stops when told to, or
when the control process goes away (its end of the channel closes), so no worker is
ever left serving on its own.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Any

from medlb import logs
from medlb.proxy.listeners import BindError, Listeners
from medlb.runtime import Runtime
from medlb.workers.board import Board
from medlb.workers.channel import Channel, ChannelClosed
from medlb.workers.replica import apply_decided_state, counters

log = logs.get_logger("medlb.worker")


class Worker:
    def __init__(self, index: int, channel: Channel):
        self.index = index
        logs.process_fields["worker"] = index
        self.channel = channel
        self.runtime = Runtime()
        self.listeners = Listeners(self.runtime)
        self.listeners.assigned = set()
        self.stop_timeout = 30.0
        self.version = 0
        self.board: Board | None = None
        self._logging = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # The terminal's Ctrl-C and SIGHUP reach the whole process group: the control
        # process decides what they mean and tells the workers.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        terminated = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, terminated.set)
        while True:
            receiving = asyncio.ensure_future(self.channel.receive())
            ended = asyncio.ensure_future(terminated.wait())
            await asyncio.wait({receiving, ended}, return_when=asyncio.FIRST_COMPLETED)
            if receiving.done() and receiving.exception() is None:
                ended.cancel()
                message, fds = receiving.result()
                if await self._handle(message, fds):
                    return
                continue
            receiving.cancel()
            ended.cancel()
            why = "SIGTERM" if terminated.is_set() else "the control process went away"
            log.warning("worker_stopping", why=why)
            await self.listeners.stop(self.stop_timeout)
            return

    async def _handle(self, message: dict[str, Any], fds: list[int]) -> bool:
        """Carry out one message; True when the worker should exit."""
        kind = message["type"]
        if kind == "load":
            await self._reply({"type": "loaded", "error": await self._load(message, fds)})
        elif kind == "state":
            if message["version"] >= self.version:  # never step back to an older state
                self.version = message["version"]
                apply_decided_state(self.runtime, message["decided"])
            await self._reply({"type": "state_ack", "version": message["version"]})
        elif kind == "stats":
            tls = {name: handle.tls.stats for name, handle in self.listeners.handles.items() if handle.tls is not None}
            await self._reply({"type": "stats", "id": message["id"], "counters": counters(self.runtime, tls),
                               "connections": self.listeners.count_connections()})
        elif kind == "stop":
            left = await self.listeners.stop(message["timeout"])
            await self._reply({"type": "stopped", "aborted": left})
            return True
        return False

    async def _load(self, message: dict[str, Any], fds: list[int]) -> str | None:
        if message["board"]:
            self.board = Board(fds.pop(), message["workers"], self.index)
        sockets = [socket.socket(fileno=fd) for fd in fds]
        config = message["config"]
        if not self._logging:
            level, form = message["log"]
            logs.setup(level, form)
            self._logging = True
        self.stop_timeout = config.stop_timeout
        self.runtime.load(config)
        if self.board is not None:
            self.board.attach(self.runtime.services.values(), message["slots"])
        apply_decided_state(self.runtime, message["decided"])
        self.version = max(self.version, message["version"])
        self.listeners.base_dir = message["base_dir"]
        self.listeners.descriptor_reserve = config.limits.descriptor_reserve
        self.listeners.assigned = set(message["assigned"])
        self.listeners.provided.update(zip(message["new"], sockets))
        try:
            await self.listeners.sync()
        except BindError as exc:
            return str(exc)
        return None

    async def _reply(self, message: dict[str, Any]) -> None:
        try:
            await self.channel.send(message)
        except ChannelClosed:
            pass  # the control process is gone; the receive loop sees it next


async def serve(index: int, channel_fd: int) -> None:
    channel = Channel(socket.socket(fileno=channel_fd))
    try:
        await Worker(index, channel).run()
    finally:
        channel.close()
