"""The control process's side of `workers: N`: start, feed, count and stop the workers.

The control process binds every listen socket itself, N sockets per address in one
SO_REUSEPORT group, so a port in use or a bad certificate is found before any worker
changes anything, exactly as with one process. It hands socket i to worker i and keeps
its own copy: a worker that dies leaves its socket's queue waiting for the worker
started in its place instead of dropping the connections in it.

Two exceptions to "every worker serves every address":
- `mllp` services ordered by a message field (PID-3, MSH-4, ...) are served by worker 0
  alone. Messages of one ordering key reach the servers one at a time, in order, across
  all senders; that needs one dispatcher. With `ordering_key: connection` or
  `balance: connection` every worker serves them (each connection stays in one worker).
- services with `persistence: source-ip` steer each client address to one worker (a
  BPF program on the group, see steering.py), so the client finds its table entry.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import time
from typing import Any

from medlb import logs
from medlb.config import LoadedConfig
from medlb.config.models import SourceIpPersistence
from medlb.config.units import HostPort
from medlb.proxy.listeners import BindError, tls_setup
from medlb.runtime import Change, Runtime
from medlb.tasks import spawn
from medlb.workers import board
from medlb.workers.channel import Channel, ChannelClosed
from medlb.workers.replica import decided_state, fold_counters
from medlb.workers.steering import steer_by_source

log = logs.get_logger("medlb.workers")

Key = tuple[str, HostPort]
#: How long the control process waits for a worker's answer before using what it had.
ANSWER_TIMEOUT = 2.0


class WorkerProcess:
    def __init__(self, index: int):
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.reader: asyncio.Task[None] | None = None
        #: Listen sockets this worker has been given, by address.
        self.has: set[Key] = set()
        self.acked = 0
        self.acked_changed = asyncio.Event()
        self.answers: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.last_counters: dict[str, Any] = {}
        self.connections = 0
        self.restarts = 0
        self.started_at = 0.0
        self.board_sent = False
        self.backoff = 0.0

    def view(self) -> dict[str, Any]:
        """For the API: which process, since when, and how much it has served."""
        return {"index": self.index, "pid": self.process.pid if self.process else None, "alive": self.alive,
                "started_at": self.started_at, "restarts": self.restarts, "active_connections": self.connections,
                "total_connections": sum(part["service"].total for part in self.last_counters.values())}

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None and self.channel is not None

    def expect(self, key: Any) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.answers[key] = future
        return future

    async def read(self) -> None:
        assert self.channel is not None
        try:
            while True:
                message, _ = await self.channel.receive()
                kind = message["type"]
                if kind == "state_ack":
                    self.acked = max(self.acked, message["version"])
                    self.acked_changed.set()
                    continue
                key = (kind, message.get("id"))
                future = self.answers.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(message)
        except ChannelClosed:
            pass
        finally:
            for future in self.answers.values():
                if not future.done():
                    future.set_exception(ChannelClosed(f"worker {self.index} went away"))
            self.answers.clear()


class Workers:
    """N worker processes behind the control process's runtime."""

    def __init__(self, runtime: Runtime, count: int, backlog: int = 1024):
        self.runtime = runtime
        self.count = count
        self.backlog = backlog
        self.procs = [WorkerProcess(i) for i in range(count)]
        #: Listen sockets per address: socket j belongs to the j-th worker serving it.
        self.sockets: dict[Key, list[socket.socket]] = {}
        self.version = 0
        self.retired: list[dict[str, Any]] = []
        self.loaded: LoadedConfig | None = None
        self.log_settings = ("info", "text")
        self.stopping = False
        self._ids = itertools.count(1)
        self._watchers: list[asyncio.Task[None]] = []
        self._collecting: asyncio.Task[None] | None = None
        #: The shared table of open connections per server (leastconn across workers).
        self.board_fd = board.create(count)
        self.slots: dict[tuple[str, str], int] = {}
        runtime.subscribe(self._on_changes)

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        for worker in self.procs:
            await self._spawn(worker)

    async def _spawn(self, worker: WorkerProcess) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "medlb", "worker", "--index", str(worker.index), "--channel-fd",
            str(theirs.fileno()), pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        theirs.close()
        worker.channel = Channel(ours)
        worker.has = set()
        worker.acked = 0
        worker.board_sent = False
        worker.started_at = time.time()
        worker.reader = asyncio.get_running_loop().create_task(worker.read())
        self._watchers.append(asyncio.get_running_loop().create_task(self._watch(worker)))
        log.event("worker_started", worker=worker.index, pid=worker.process.pid)

    async def _watch(self, worker: WorkerProcess) -> None:
        """Start a worker again if it exits while medlb runs."""
        process = worker.process
        assert process is not None
        code = await process.wait()
        if self.stopping or worker.process is not process:
            return
        ran = time.time() - worker.started_at
        log.error("worker_exited", worker=worker.index, pid=process.pid, code=code, ran_seconds=round(ran, 1))
        self.retired.append(worker.last_counters)
        worker.last_counters, worker.connections = {}, 0
        board.clear_row(self.board_fd, worker.index)
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None
        # A worker that dies at once (a broken install) is started again ever more slowly.
        worker.backoff = 0.2 if ran > 10 else min(30.0, max(0.2, worker.backoff * 2))
        await asyncio.sleep(worker.backoff)
        if self.stopping:
            return
        worker.restarts += 1
        await self._spawn(worker)
        if self.loaded is not None:
            await self._load(worker, self.loaded)

    async def stop(self, timeout: float) -> int:
        """Tell every worker to stop and drain; the connections they had to abort."""
        self.stopping = True
        self.close_all()  # our copies of the listen sockets: the workers close theirs
        waits = []
        for worker in self.procs:
            if worker.alive:
                waits.append(self._ask(worker, {"type": "stop", "timeout": timeout}, ("stopped", None),
                                       timeout + ANSWER_TIMEOUT))
        answers = await asyncio.gather(*waits, return_exceptions=True)
        aborted = sum(a.get("aborted", 0) for a in answers if isinstance(a, dict))
        for worker in self.procs:
            if worker.process is not None and worker.process.returncode is None:
                try:
                    await asyncio.wait_for(worker.process.wait(), ANSWER_TIMEOUT)
                except TimeoutError:
                    worker.process.kill()
                    await worker.process.wait()
            if worker.channel is not None:
                worker.channel.close()
        for task in self._watchers:
            task.cancel()
        if self.board_fd >= 0:
            os.close(self.board_fd)
            self.board_fd = -1
        return aborted

    def close_all(self) -> None:
        for key in list(self.sockets):
            self._close(key)

    def _close(self, key: Key) -> None:
        for sock in self.sockets.pop(key):
            sock.close()
        log.event("listener_closed", service=key[0], address=str(key[1]))

    # --- config ----------------------------------------------------------------------

    def serving(self, service_name: str) -> list[int]:
        """The workers that serve a service's addresses: all, except for HL7 ordered by
        a message field (one patient's messages may come from several senders, and go
        one at a time: that takes one dispatcher)."""
        config = self.runtime.services[service_name].config
        mllp = config.mllp
        if config.mode == "mllp" and (mllp is None or (mllp.balance == "message" and mllp.ordering_key != "connection")):
            return [0]
        return list(range(self.count))

    async def sync(self, loaded: LoadedConfig, log_settings: tuple[str, str]) -> None:
        """Bind what the config adds, hand the workers the new config and sockets, close
        what it removes. Raises BindError, changing nothing, if an address or a
        certificate is unusable."""
        tls = tls_setup(self.runtime, loaded.base_dir)
        for key, group in self.sockets.items():
            if key[0] in self.runtime.services and len(group) != len(self.serving(key[0])):
                raise BindError(f"service {key[0]!r} on {key[1]}: with workers, HL7 ordered by a message field is "
                                "served by one worker; moving a service into or out of that takes a restart")
        wanted = {(name, address) for name, service in self.runtime.services.items()
                  for address in service.config.addresses}
        opened: dict[Key, list[socket.socket]] = {}
        try:
            for key in sorted(wanted - set(self.sockets), key=str):
                opened[key] = self._bind(key)
        except BindError:
            for group in opened.values():
                for sock in group:
                    sock.close()
            raise
        for name, service in self.runtime.services.items():
            service.tls = tls[name][0]  # certificates for the page; the counters come from the workers
        self.sockets.update(opened)
        for service in self.runtime.services.values():
            for key in [(service.name, "")] + [(service.name, server.name) for server in service.servers()]:
                if key not in self.slots and len(self.slots) < board.MAX_SLOTS:
                    self.slots[key] = len(self.slots)
        self.loaded = loaded
        self.log_settings = log_settings  # the command line's --log-* win over the file, as in this process
        results = await asyncio.gather(*(self._load(w, loaded) for w in self.procs if w.alive))
        for error in filter(None, results):
            log.error("worker_load_failed", error=error)
        for key in set(self.sockets) - wanted:
            self._close(key)
        for key in sorted(opened, key=str):
            log.event("listening", service=key[0], address=str(key[1]), mode=self.runtime.services[key[0]].mode,
                      workers=len(opened[key]))

    def _bind(self, key: Key) -> list[socket.socket]:
        name, address = key
        assert address.port is not None
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        held = {a for _, a in self.sockets}
        if address not in held:
            _probe(name, address, family)  # a process outside this group on the port
        group = []
        try:
            for _ in self.serving(name):
                sock = socket.socket(family, socket.SOCK_STREAM)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address.host, address.port))
            for sock in group:  # in worker order: the kernel numbers the group's sockets so
                sock.listen(self.backlog)
            service = self.runtime.services[name]
            if len(group) > 1 and isinstance(service.config.persistence, SourceIpPersistence):
                steer_by_source(group[0], len(group))
        except OSError as exc:
            for sock in group:
                sock.close()
            raise BindError.cannot_listen(name, address, exc) from None
        for sock in group:
            sock.setblocking(False)
        return group

    async def _load(self, worker: WorkerProcess, loaded: LoadedConfig) -> str | None:
        assigned = [key for key in self.sockets
                    if key[0] in self.runtime.services and worker.index in self.serving(key[0])]
        new = [key for key in assigned if key not in worker.has]
        fds = [self.sockets[key][self.serving(key[0]).index(worker.index)].fileno() for key in new]
        if not worker.board_sent:
            fds.append(self.board_fd)
        message = {"type": "load", "config": loaded.config, "base_dir": loaded.base_dir, "log": self.log_settings,
                   "assigned": assigned, "new": new, "workers": self.count,
                   "board": not worker.board_sent, "slots": self.slots,
                   "decided": decided_state(self.runtime), "version": self.version}
        try:
            answer = await self._ask(worker, message, ("loaded", None), 30.0, fds)
        except (ChannelClosed, TimeoutError) as exc:
            return f"worker {worker.index}: {exc or 'no answer'}"
        worker.has, worker.board_sent = set(assigned), True
        worker.acked = max(worker.acked, message["version"])  # the load carried the decided state
        return answer.get("error")

    async def _ask(self, worker: WorkerProcess, message: dict[str, Any], answer: tuple[str, Any], timeout: float,
                   fds: list[int] | tuple[()] = ()) -> dict[str, Any]:
        assert worker.channel is not None
        future = worker.expect(answer)
        await worker.channel.send(message, fds)
        return await asyncio.wait_for(future, timeout)

    # --- state down, counters up -----------------------------------------------------

    def _on_changes(self, changes: list[Change]) -> None:
        self.version += 1
        spawn(self._publish(self.version))

    async def _publish(self, version: int) -> None:
        if version != self.version:
            return  # a newer state is on its way
        message = {"type": "state", "decided": decided_state(self.runtime), "version": version}
        for worker in self.procs:
            if worker.alive:
                try:
                    await worker.channel.send(message)  # type: ignore[union-attr]
                except ChannelClosed:
                    pass  # its watcher starts it again, with the state in its load

    async def settle(self, timeout: float = 1.0) -> bool:
        """Wait until every worker runs with the latest decided state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for worker in self.procs:
            while worker.alive and worker.acked < self.version and loop.time() < deadline:
                worker.acked_changed.clear()
                try:
                    await asyncio.wait_for(worker.acked_changed.wait(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
        return all(w.acked >= self.version for w in self.procs if w.alive)

    async def collect(self) -> None:
        """Bring the control runtime's counters up to date; one round at a time."""
        if self._collecting is None or self._collecting.done():
            self._collecting = asyncio.get_running_loop().create_task(self._collect())
        await asyncio.shield(self._collecting)

    async def _collect(self) -> None:
        async def one(worker: WorkerProcess) -> None:
            ident = next(self._ids)
            try:
                answer = await self._ask(worker, {"type": "stats", "id": ident}, ("stats", ident), ANSWER_TIMEOUT)
            except (ChannelClosed, TimeoutError):
                return  # keep what it said last
            worker.last_counters, worker.connections = answer["counters"], answer["connections"]

        await asyncio.gather(*(one(w) for w in self.procs if w.alive))
        fold_counters(self.runtime, [w.last_counters for w in self.procs], self.retired)

    def count_connections(self) -> int:
        return sum(worker.connections for worker in self.procs)


def _probe(name: str, address: HostPort, family: int) -> None:
    """Refuse a port another process listens on, even one that allows SO_REUSEPORT
    (HAProxy does): joining its group would take a share of its connections."""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((address.host, address.port))
    except OSError as exc:
        raise BindError.cannot_listen(name, address, exc) from None
    finally:
        probe.close()

