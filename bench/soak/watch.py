"""What medlb showed while the soak ran: each server's health and state as the API gave
them (the moment a change was first seen, on the harness's monotonic clock), and the
resident memory of every medlb process.

The health timeline is what a client failure is judged against: "the API showed this
server down at t". Polls are cheap reads; a poll that fails or is slow is counted, since
the control plane answering under load is part of what the soak checks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import rss_bytes

HEALTH_POLL = 0.25
RSS_POLL = 2.0


@dataclass
class Change:
    at: float
    service: str
    server: str
    what: str  # "health" or "state"
    value: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Seen:
    """The API's view over time."""

    changes: list[Change] = field(default_factory=list)
    current: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    polls: int = 0
    api_failures: list[str] = field(default_factory=list)
    slowest_poll: float = 0.0
    rss: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    pid_changes: list[str] = field(default_factory=list)  # a worker started again, a process gone


def api_client(base_url: str, token: str, timeout: float = 15.0) -> httpx.AsyncClient:
    """A new connection per request: a kept-alive one that the server closes as idle just
    as a request goes out fails that request (the HTTP/1.1 keep-alive race), which is the
    client's to retry and would read here as an API failure."""
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                             limits=httpx.Limits(max_keepalive_connections=0))


class Watch:
    def __init__(self, client: httpx.AsyncClient, control_pid: int, seen: Seen, started: float):
        self.client, self.control_pid, self.seen, self.started = client, control_pid, seen, started

    def at(self, now: float) -> str:
        """A time for a message: seconds since the run started."""
        return f"t={now - self.started:.1f} s"

    async def run(self, stop: asyncio.Event, limit: float) -> None:
        """Poll until `stop` is set (and never past `limit` on the monotonic clock)."""
        await asyncio.gather(self._poll(stop, limit, HEALTH_POLL, self.health_once),
                             self._poll(stop, limit, RSS_POLL, self.rss_once))

    async def _poll(self, stop: asyncio.Event, limit: float, every: float, once: Any) -> None:
        while not stop.is_set() and time.monotonic() < limit:
            await once()
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass

    async def health_once(self) -> None:
        started = time.monotonic()
        try:
            response = await self.client.get("/api/v1/services", timeout=5.0)
            response.raise_for_status()
            services = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.seen.api_failures.append(f"{self.at(started)}: services: {type(exc).__name__}: {exc}"[:200])
            return
        now = time.monotonic()
        self.seen.polls += 1
        self.seen.slowest_poll = max(self.seen.slowest_poll, now - started)
        for found in services:
            for server in found["servers"]:
                self.observe(now, found["name"], server)

    def observe(self, now: float, service: str, server: dict[str, Any]) -> None:
        key = (service, server["name"])
        before = self.seen.current.get(key, {})
        for what in ("health", "state"):
            if before.get(what) != server[what]:
                self.seen.changes.append(Change(now, service, server["name"], what, server[what]))
        self.seen.current[key] = {"health": server["health"], "state": server["state"], "weight": server["weight"]}

    async def rss_once(self) -> None:
        now = time.monotonic()
        processes = {"control": self.control_pid}
        try:
            response = await self.client.get("/api/v1/workers", timeout=5.0)
            for worker in response.json().get("processes", []):
                if worker.get("pid"):
                    processes[f"worker {worker['index']}"] = worker["pid"]
        except (httpx.HTTPError, ValueError) as exc:
            self.seen.api_failures.append(f"{self.at(now)}: workers: {type(exc).__name__}: {exc}"[:200])
        for label, pid in processes.items():
            before = self.seen.pids.get(label)
            if before is not None and before != pid:
                self.seen.pid_changes.append(f"{label}: pid {before} -> {pid} at {self.at(now)}")
            self.seen.pids[label] = pid
            try:
                size = rss_bytes(pid)
            except OSError:
                gone = f"{label}: pid {pid} is gone"
                if not any(change.startswith(gone) for change in self.seen.pid_changes):
                    self.seen.pid_changes.append(f"{gone} at {self.at(now)}")
                continue
            self.seen.rss.setdefault(label, []).append((now, size))
