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

A config reaches the workers in two phases (medlb/dataplane.py): every worker prepares
it (and says why if it cannot), then all commit, or all abort. One lock orders these
rounds with the start of a worker in place of one that died, so a restarted worker
always loads the config the others run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlb import logs
from medlb.config.models import Config, ServiceConfig, SourceIpPersistence
from medlb.config.units import HostPort
from medlb.dataplane import Refused
from medlb.proxy.listeners import BindError, TlsSetup, bound_socket, floating_hosts, tls_setup
from medlb.runtime import Change, Runtime, Service
from medlb.runtime.model import ReloadPlan
from medlb.runtime.persistence import Tables, merge
from medlb.tasks import spawn
from medlb.workers import board
from medlb.workers.channel import Channel, ChannelClosed
from medlb.workers.replica import fold_counters
from medlb.workers.steering import steer_by_source

log = logs.get_logger("medlb.workers")

#: How long the control process waits for a worker's answer before using what it had.
ANSWER_TIMEOUT = 2.0
#: How long every worker has to confirm an action (a state change, a commit): after it,
#: the API answers 202 and names the workers that did not.
SETTLE_TIMEOUT = 1.0
#: How long a running worker has to prepare a config before the reload is refused, and
#: a worker just started (Python starting, medlb importing) to load its first one.
PREPARE_TIMEOUT = 5.0
FIRST_LOAD_TIMEOUT = 30.0


def serving(config: ServiceConfig, count: int) -> list[int]:
    """The workers that serve a service's addresses: all, except for HL7 ordered by a
    message field (one patient's messages may come from several senders, and go one at
    a time: that takes one dispatcher)."""
    mllp = config.mllp
    if config.mode == "mllp" and (mllp is None or (mllp.balance == "message" and mllp.ordering_key != "connection")):
        return [0]
    return list(range(count))


@dataclass(eq=False)
class SocketGroup:
    """The listen sockets of one address, one SO_REUSEPORT group: socket j belongs to
    the j-th worker serving it. The control process keeps its copies."""

    service: str
    sockets: list[socket.socket]
    steered: bool = False

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@dataclass(eq=False)
class WorkersPlan:
    """The workers' side of a reload plan: prepared in every worker asked, waiting for
    commit or discard. Holds the supervisor's lock until then."""

    supervisor: "Workers"
    ident: int
    config: Config
    services: dict[str, Service]
    base_dir: Path | None
    #: Every address after commit, and the service it goes to.
    routes: dict[HostPort, str]
    #: Groups bound for addresses the running config does not listen on.
    opened: dict[HostPort, SocketGroup]
    tls: TlsSetup
    slots: dict[tuple[str, str], int]
    #: The workers asked to prepare (each gets the commit or the abort), and the
    #: addresses each holds a socket for after commit.
    asked: dict["WorkerProcess", set[HostPort]] = field(default_factory=dict)
    #: The workers that did not answer in time.
    silent: list[int] = field(default_factory=list)

    async def commit(self) -> list[int]:
        return await self.supervisor._commit(self)

    async def discard(self) -> None:
        await self.supervisor._discard(self)


class WorkerProcess:
    def __init__(self, index: int):
        self.index = index
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.reader: asyncio.Task[None] | None = None
        #: Starts the worker again whenever it exits: one task for the worker's whole life.
        self.watcher: asyncio.Task[None] | None = None
        #: Listen sockets this worker has been given, by address.
        self.has: set[HostPort] = set()
        #: It has committed a config since it started.
        self.loaded = False
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
        #: The listen sockets of every address the running config listens on.
        self.groups: dict[HostPort, SocketGroup] = {}
        self.version = 0
        self.retired: list[dict[str, Any]] = []
        #: The running config and its folder, for a worker started in place of one that died.
        self.config: Config | None = None
        self.base_dir: Path | None = None
        #: Log level and format for the workers (the command line's --log-* win over the file).
        self.log_settings = ("info", "text")
        self.stopping = False
        self._ids = itertools.count(1)
        #: Held from a round's prepare to its commit or discard, and while a worker restarts.
        self._lock = asyncio.Lock()
        self._collecting: asyncio.Task[None] | None = None
        #: The shared table of open connections per server (leastconn across workers).
        self.board_fd = board.create(count)
        self.slots: dict[tuple[str, str], int] = {}
        runtime.subscribe(self.on_changes)

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        for worker in self.procs:
            await self._spawn(worker)
            worker.watcher = asyncio.get_running_loop().create_task(self._watch(worker))

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
        worker.loaded = False
        worker.started_at = time.time()
        worker.reader = asyncio.get_running_loop().create_task(worker.read())
        log.event("worker_started", worker=worker.index, pid=worker.process.pid)

    async def _watch(self, worker: WorkerProcess) -> None:
        """Start a worker again whenever it exits while medlb runs."""
        while True:
            process = worker.process
            assert process is not None
            code = await process.wait()
            if self.stopping:
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
            async with self._lock:  # not in the middle of a reload: it loads what the others run
                if self.stopping:
                    return
                worker.restarts += 1
                await self._spawn(worker)
                if self.config is not None:
                    await self._load(worker)

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
        for worker in self.procs:
            if worker.watcher is not None:
                worker.watcher.cancel()
        if self.board_fd >= 0:
            os.close(self.board_fd)
            self.board_fd = -1
        return aborted

    def close_all(self) -> None:
        for address in list(self.groups):
            self._close(address)

    def _close(self, address: HostPort) -> None:
        group = self.groups.pop(address)
        group.close()
        log.event("listener_closed", service=group.service, address=str(address))

    # --- config ----------------------------------------------------------------------

    async def prepare(self, plan: ReloadPlan, base_dir: Path | None) -> WorkersPlan:
        """Bind what the plan adds and have every worker prepare it. Raises Refused, with
        every worker's reason, having undone it all, if an address, a certificate or a
        worker cannot take it; a worker that does not answer in time refuses it too."""
        await self._lock.acquire()
        try:
            return await self._prepare(plan, base_dir)
        except BaseException:
            self._lock.release()
            raise

    async def _prepare(self, plan: ReloadPlan, base_dir: Path | None) -> WorkersPlan:
        tls = tls_setup(plan.services, base_dir)
        routes = {address: name for name, service in plan.services.items()
                  for address in service.config.relayed_addresses}
        for address, name in routes.items():
            group = self.groups.get(address)
            if group is not None and len(group.sockets) != len(serving(plan.services[name].config, self.count)):
                raise BindError(f"service {name!r} on {address}: with workers, HL7 ordered by a message field is "
                                "served by one worker; moving an address into or out of that takes a restart")
        slots = dict(self.slots)
        for service in plan.services.values():
            keys = [(service.name, "")] + [(service.name, server.name) for server in service.servers()]
            if service.config.scheduler == "roundrobin":
                keys += [(service.name, board.cursor_key(pool, tier)) for pool in service.pools
                         for tier in ("primary", "backup")]
            for key in keys:
                if key not in slots and len(slots) < board.MAX_SLOTS:
                    slots[key] = len(slots)
        prepared = WorkersPlan(self, next(self._ids), plan.config, plan.services, base_dir, routes, {}, tls, slots)
        try:
            for address in sorted(set(routes) - set(self.groups), key=str):
                prepared.opened[address] = self._bind(routes[address], address, plan.services[routes[address]],
                                                      floating_hosts(plan.config))
            outcomes = await asyncio.gather(*(self._prepare_worker(w, prepared) for w in self.procs if w.alive))
        except BaseException:
            await self._discard(prepared, release=False)
            raise
        problems = [outcome for outcome in outcomes if outcome]
        if problems:
            await self._discard(prepared, release=False)
            raise Refused(*problems, not_answered=prepared.silent)
        return prepared

    async def _prepare_worker(self, worker: WorkerProcess, prepared: WorkersPlan) -> str | None:
        """Send one worker its part of the plan; the reason it cannot take it, or None."""
        services = prepared.services
        routes = {address: name for address, name in prepared.routes.items()
                  if worker.index in serving(services[name].config, self.count)}
        new = [address for address in routes if address not in worker.has]
        fds = []
        for address in new:
            group = prepared.opened.get(address) or self.groups[address]
            fds.append(group.sockets[serving(services[routes[address]].config, self.count).index(worker.index)].fileno())
        if not worker.board_sent:
            fds.append(self.board_fd)
        message = {"type": "prepare", "id": prepared.ident, "config": prepared.config,
                   "base_dir": prepared.base_dir, "log": self.log_settings, "routes": routes, "new": new,
                   "workers": self.count, "board": not worker.board_sent}
        prepared.asked[worker] = set(routes)  # from here on it gets the commit or the abort
        timeout = PREPARE_TIMEOUT if worker.loaded else FIRST_LOAD_TIMEOUT
        try:
            answer = await self._ask(worker, message, ("prepared", prepared.ident), timeout, fds)
        except ChannelClosed:
            return f"worker {worker.index} went away while preparing the config"
        except TimeoutError:
            prepared.silent.append(worker.index)
            pid = worker.process.pid if worker.process else None
            return (f"worker {worker.index} (pid {pid}) did not answer within {timeout:g} s "
                    "(it may be stopped or overloaded)")
        worker.board_sent = True
        return answer.get("error")

    async def _commit(self, prepared: WorkersPlan) -> list[int]:
        """Make the prepared plan live in every worker (the control runtime committed it
        just before); the workers that did not confirm within the settle time."""
        try:
            self.groups.update(prepared.opened)
            for address, name in prepared.routes.items():
                self.groups[address].service = name
            for address in [a for a in self.groups if a not in prepared.routes]:
                self._close(address)
            for address, group in self.groups.items():
                self._steer(address, group, prepared.services[group.service])
            for name, service in prepared.services.items():
                service.tls = prepared.tls[name][0]  # certificates for the page; the counters come from the workers
            self.slots = prepared.slots
            self.config, self.base_dir = prepared.config, prepared.base_dir
            self.version += 1
            await self._send_commit(prepared)
            for address in sorted(prepared.opened, key=str):
                log.event("listening", service=prepared.routes[address], address=str(address),
                          mode=prepared.services[prepared.routes[address]].mode,
                          workers=len(prepared.opened[address].sockets))
            return await self.settle()
        finally:
            self._lock.release()

    async def _send_commit(self, prepared: WorkersPlan) -> None:
        """Tell the workers that prepared to go live, with the state decided now."""
        message = {"type": "commit", "id": prepared.ident, "decided": self.runtime.snapshot(),
                   "version": self.version, "slots": self.slots}
        for worker, holds in prepared.asked.items():
            if not worker.alive:
                continue  # it died since it prepared: its watcher starts it with this config
            try:
                await worker.channel.send(message)  # type: ignore[union-attr]
            except ChannelClosed:
                continue
            worker.has, worker.loaded = holds, True

    async def _discard(self, prepared: WorkersPlan, release: bool = True) -> None:
        try:
            for worker in prepared.asked:
                if worker.alive:
                    try:
                        await worker.channel.send({"type": "abort", "id": prepared.ident})  # type: ignore[union-attr]
                    except ChannelClosed:
                        pass
            for group in prepared.opened.values():
                group.close()
        finally:
            if release:
                self._lock.release()

    async def _load(self, worker: WorkerProcess) -> None:
        """Prepare and commit the running config in one worker started in place of
        another (under the lock, so nothing else changes the config meanwhile)."""
        assert self.config is not None
        routes = {address: group.service for address, group in self.groups.items()}
        prepared = WorkersPlan(self, next(self._ids), self.config, self.runtime.services, self.base_dir, routes,
                               {}, {}, self.slots)
        error = await self._prepare_worker(worker, prepared)
        if error:
            log.error("worker_load_failed", worker=worker.index, error=error)
            await self._discard(prepared, release=False)
        else:
            await self._send_commit(prepared)

    def _bind(self, name: str, address: HostPort, service: Service, floating: frozenset[str]) -> SocketGroup:
        _probe(name, address, floating)  # a process outside this group on the port
        group = SocketGroup(name, [])
        try:
            for _ in serving(service.config, self.count):
                group.sockets.append(bound_socket(name, address, reuse_port=True, floating=floating))
            for sock in group.sockets:  # in worker order: the kernel numbers the group's sockets so
                sock.listen(self.backlog)
            self._steer(address, group, service, refuse=True)
        except BindError:
            group.close()
            raise
        except OSError as exc:
            group.close()
            raise BindError.cannot_listen(name, address, exc) from None
        for sock in group.sockets:
            sock.setblocking(False)
        return group

    def _steer(self, address: HostPort, group: SocketGroup, service: Service, refuse: bool = False) -> None:
        """Attach the source-address program to a group whose service needs it (a reload
        may give an address source-ip persistence); a group keeps it once attached."""
        if group.steered or len(group.sockets) < 2 or not isinstance(service.config.persistence, SourceIpPersistence):
            return
        try:
            steer_by_source(group.sockets[0], len(group.sockets))
        except OSError as exc:
            if refuse:
                raise
            log.error("steering_failed", service=service.name, address=str(address), error=exc.strerror or str(exc))
            return
        group.steered = True

    async def _ask(self, worker: WorkerProcess, message: dict[str, Any], answer: tuple[str, Any], timeout: float,
                   fds: list[int] | tuple[()] = ()) -> dict[str, Any]:
        assert worker.channel is not None
        future = worker.expect(answer)
        await worker.channel.send(message, fds)
        return await asyncio.wait_for(future, timeout)

    # --- state down, counters up -----------------------------------------------------

    def on_changes(self, changes: list[Change]) -> None:
        """Every change of the model reaches the workers as the whole decided state."""
        self.version += 1
        spawn(self._publish(self.version))

    async def _publish(self, version: int) -> None:
        if version != self.version:
            return  # a newer state is on its way
        message = {"type": "state", "decided": self.runtime.snapshot(), "version": version}
        for worker in self.procs:
            if worker.alive:
                try:
                    await worker.channel.send(message)  # type: ignore[union-attr]
                except ChannelClosed:
                    pass  # its watcher starts it again, with the state in its load

    async def settle(self, timeout: float = SETTLE_TIMEOUT) -> list[int]:
        """Wait until every worker runs with the latest decided state; the workers that
        did not confirm it in time (they apply it when they run again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for worker in self.procs:
            while worker.alive and worker.acked < self.version and loop.time() < deadline:
                worker.acked_changed.clear()
                try:
                    await asyncio.wait_for(worker.acked_changed.wait(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
        return [w.index for w in self.procs if w.alive and w.acked < self.version]

    async def collect(self) -> None:
        """Bring the control runtime's counters up to date; one round at a time."""
        if self._collecting is None or self._collecting.done():
            self._collecting = asyncio.get_running_loop().create_task(self._collect())
        await asyncio.shield(self._collecting)

    async def _ask_each(self, message: dict[str, Any], answer_type: str) -> list[tuple[WorkerProcess, Any]]:
        """Ask every live worker at once; (worker, its answer) for those that answered in
        time (one that did not is left out: the caller keeps what it had)."""
        async def one(worker: WorkerProcess) -> tuple[WorkerProcess, Any] | None:
            ident = next(self._ids)
            try:
                return worker, await self._ask(worker, {**message, "id": ident}, (answer_type, ident), ANSWER_TIMEOUT)
            except (ChannelClosed, TimeoutError):
                return None

        answers = await asyncio.gather(*(one(w) for w in self.procs if w.alive))
        return [answer for answer in answers if answer is not None]

    async def _collect(self) -> None:
        for worker, answer in await self._ask_each({"type": "stats"}, "stats"):
            worker.last_counters, worker.connections = answer["counters"], answer["connections"]
        fold_counters(self.runtime, [w.last_counters for w in self.procs], self.retired)

    def count_connections(self) -> int:
        return sum(worker.connections for worker in self.procs)

    # --- source-IP persistence, for the pair's peer -----------------------------------

    async def sticky_tables(self) -> Tables:
        """Every worker's source-IP entries as one set (a worker that does not answer is left out)."""
        return merge([answer["tables"] for _, answer in await self._ask_each({"type": "sticky"}, "sticky")])

    async def load_sticky(self, tables: Tables) -> int:
        """Give every worker the entries (a client is steered to one worker by its address;
        each worker keeps at most max_entries); how many the most taking worker took."""
        answers = await self._ask_each({"type": "sticky_load", "tables": tables}, "sticky_loaded")
        return max((int(answer["taken"]) for _, answer in answers), default=0)


def _probe(name: str, address: HostPort, floating: frozenset[str]) -> None:
    """Refuse a port another process listens on, even one that allows SO_REUSEPORT
    (HAProxy does): joining its group would take a share of its connections."""
    bound_socket(name, address, floating=floating).close()

