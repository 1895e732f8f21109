"""One data-plane worker: relays connections on the sockets the control process gave it.

A worker holds a replica of the runtime built from the same config as the control
process's. It runs no health checks, no admin API and no store: it copies the state the
control process decided, answers requests for its counters, and stops when told to, or
when the control process goes away (its end of the channel closes), so no worker is
ever left serving on its own.

A config arrives in two steps, as everywhere (medlb/dataplane.py): `prepare` builds the
replica's plan and everything that can fail for it (certificates, the sockets sent
along) and answers with the reason if something cannot be done; only `commit` makes it
live, and `abort` throws it away. So a config one worker cannot take is taken by none.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from typing import Any

from medlb import logs
from medlb.dataplane import Refused
from medlb.proxy.listeners import ListenerPlan, Listeners
from medlb.runtime import Runtime, Snapshot
from medlb.runtime.persistence import export_tables, load_tables
from medlb.runtime.model import ReloadPlan
from medlb.workers.board import Board
from medlb.workers.channel import Channel, ChannelClosed
from medlb.workers.replica import counters

log = logs.get_logger("medlb.worker")


class Worker:
    def __init__(self, index: int, channel: Channel):
        self.index = index
        logs.process_fields["worker"] = index
        self.channel = channel
        self.runtime = Runtime()
        self.listeners = Listeners(self.runtime)
        self.listeners.runs_checks = False  # the health checks run in the control process
        self.stop_timeout = 30.0
        #: The prepared config waiting for its commit or abort: (id, plan, listeners' part).
        self.pending: tuple[int, ReloadPlan, ListenerPlan] | None = None
        self.version = 0
        #: The newest decided state received (a commit may carry an older one, sent
        #: before a state change overtook it).
        self.decided: Snapshot | None = None
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
            await self._abort()
            await self.listeners.stop(self.stop_timeout)
            return

    async def _handle(self, message: dict[str, Any], fds: list[int] | None) -> bool:
        """Carry out one message; True when the worker should exit."""
        kind = message["type"]
        if kind == "prepare":
            error = await self._prepare(message, fds)
            await self._reply({"type": "prepared", "id": message["id"], "error": error})
        elif kind == "commit":
            await self._commit(message)
            await self._reply({"type": "state_ack", "version": self.version})
        elif kind == "abort":
            if self.pending is not None and self.pending[0] == message["id"]:
                await self._abort()
        elif kind == "state":
            if message["version"] >= self.version:  # never step back to an older state
                self.version, self.decided = message["version"], message["decided"]
                self.runtime.adopt(self.decided)
            await self._reply({"type": "state_ack", "version": message["version"]})
        elif kind == "stats":
            tls = {name: handle.tls.stats for name, handle in self.listeners.handles.items() if handle.tls is not None}
            await self._reply({"type": "stats", "id": message["id"], "counters": counters(self.runtime, tls),
                               "connections": self.listeners.count_connections()})
        elif kind == "sticky":
            await self._reply({"type": "sticky", "id": message["id"],
                               "tables": export_tables(self.runtime.services, time.monotonic())})
        elif kind == "sticky_load":
            taken = load_tables(self.runtime.services, message["tables"], time.monotonic())
            await self._reply({"type": "sticky_loaded", "id": message["id"], "taken": taken})
        elif kind == "stop":
            await self._abort()
            left = await self.listeners.stop(message["timeout"])
            await self._reply({"type": "stopped", "aborted": left})
            return True
        return False

    async def _prepare(self, message: dict[str, Any], fds: list[int] | None) -> str | None:
        """Plan the config and prepare the listeners for it; the reason if it cannot be."""
        await self._abort()  # a newer prepare replaces one never committed
        if fds is None:
            return (f"worker {self.index} did not receive the listen sockets it was sent; the kernel "
                    "cut them off, most likely because the worker is at its limit of open files")
        if message["board"]:
            board_fd = fds.pop()
            if self.board is None:
                self.board = Board(board_fd, message["workers"], self.index)
            else:
                os.close(board_fd)
        sockets = {address: socket.socket(fileno=fd) for address, fd in zip(message["new"], fds)}
        if not self._logging:
            level, form = message["log"]
            logs.setup(level, form)
            self._logging = True
        try:
            plan = self.runtime.plan(message["config"])
            prepared = await self.listeners.prepare(plan, message["base_dir"], message["routes"], sockets)
        except Refused as exc:
            return f"worker {self.index}: {exc}"
        except OSError as exc:
            return f"worker {self.index}: {exc.strerror or exc}"
        self.pending = (message["id"], plan, prepared)
        return None

    async def _commit(self, message: dict[str, Any]) -> None:
        if self.pending is None or self.pending[0] != message["id"]:
            raise RuntimeError(f"commit {message['id']} without its prepare")  # a bug: exit, to be started anew
        _, plan, prepared = self.pending
        self.pending = None
        self.stop_timeout = plan.config.stop_timeout
        self.runtime.commit(plan)
        if self.board is not None:
            self.board.attach(self.runtime.services.values(), message["slots"])
        if message["version"] >= self.version or self.decided is None:
            self.version, self.decided = message["version"], message["decided"]
        self.runtime.adopt(self.decided)
        await prepared.commit()

    async def _abort(self) -> None:
        if self.pending is not None:
            prepared = self.pending[2]
            self.pending = None
            await prepared.discard()

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
