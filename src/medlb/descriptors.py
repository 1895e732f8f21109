"""Open-file descriptors: the limit medlb runs with, and how many connections fit in it.

A process that runs out of descriptors cannot accept on its admin API, open a health
check's socket or write its store: one flood of clients would take the control plane
down and mark healthy servers down with it. So medlb raises its soft limit to the hard
limit at start, and derives from the limit a ceiling of relayed connections per process
(as HAProxy derives maxconn from ulimit-n): two descriptors per connection, after a
reserve for everything that is not a relayed connection. The data plane stops accepting
at the ceiling, so the reserve is always there for the rest.

The arithmetic here is pure; only `raise_open_files_limit` and `open_files_limit` ask
the kernel.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from medlb.config.models import Config, ServiceConfig

#: Descriptors one relayed connection holds: the client's and the server's.
PER_CONNECTION = 2
#: Descriptors a health check holds while it runs (a socket, or a script's pipes).
PER_CHECK = 2


def open_files_limit() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of this process; "unlimited" as the kernel's cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = _kernel_cap()
    return (cap if soft == resource.RLIM_INFINITY else soft), (cap if hard == resource.RLIM_INFINITY else hard)


def _kernel_cap() -> int:
    """fs.nr_open: no process may hold more descriptors, whatever its limit says."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit to the hard limit; (before, after). A limit the kernel
    refuses to raise stays as it was (`after` then says so)."""
    soft, hard = open_files_limit()
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        except (OSError, ValueError):
            pass
    return soft, open_files_limit()[0]


def server_count(service: "ServiceConfig") -> int:
    return sum(len(pool.servers) + len(pool.backup) for pool in service.all_pools().values())


def reserve(fixed: int, services: Iterable["ServiceConfig"], listen_sockets: int, checks: bool) -> int:
    """Descriptors a process keeps for what is not a relayed connection: `fixed`
    (limits.descriptor_reserve: admin API, store, logs, worker channels), its listen
    sockets, the health checks if it runs them, and the connections it may keep to
    servers outside any client's (HTTP idle pools, MLLP links)."""
    total = fixed + listen_sockets
    for service in services:
        servers = server_count(service)
        if checks and service.health.type != "none":
            total += PER_CHECK * servers
        if service.mode == "http" and service.http is not None:
            total += service.http.server_idle_connections * servers
        if service.mode == "mllp" and service.mllp is not None and service.mllp.balance == "message":
            total += service.mllp.server_connections * servers
    return total


def ceiling(limit: int, reserved: int) -> int:
    """Relayed connections a process with `limit` descriptors holds after `reserved`."""
    return max(0, (limit - reserved) // PER_CONNECTION)


@dataclass(frozen=True)
class Capacity:
    """What a config's processes can hold under one descriptor limit."""

    limit: int
    processes: int
    reserve: int

    @property
    def per_process(self) -> int:
        return ceiling(self.limit, self.reserve)

    @property
    def connections(self) -> int:
        return self.processes * self.per_process


def capacity(config: "Config", limit: int) -> Capacity:
    """With one process it holds the listen sockets and runs the checks; with workers
    each worker has its own descriptor table and a socket per listen address, and the
    checks run in the control process."""
    sockets = sum(len(service.addresses) for service in config.services)
    return Capacity(limit, config.workers,
                    reserve(config.limits.descriptor_reserve, config.services, sockets, checks=config.workers == 1))
