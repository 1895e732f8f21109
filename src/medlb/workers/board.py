"""Open connections per server, shared by every worker: what `leastconn` needs.

With one process, least connections compares the connections that process holds. With
N workers each would see only its own share, and two workers could both send their next
long DICOM association to the same server. So every worker writes its own count of
open connections per server into a shared memory table (a memfd the control process
creates and passes along with the sockets), one row per worker, and reads the whole
column when it picks. Each cell has one writer; readers may see a count a moment old,
which is as exact as "least connections" needs to be.
"""

from __future__ import annotations

import mmap
import os
from typing import Iterable

from medlb.runtime import Service
from medlb.runtime.model import SharedCount

#: Servers (over all services, including ones a reload removed) a table has room for.
MAX_SLOTS = 4096
_CELL = 8


def create(workers: int) -> int:
    """A zeroed table for `workers` rows, as a file descriptor to hand to the workers."""
    fd = os.memfd_create("medlb-connections", os.MFD_CLOEXEC)
    os.ftruncate(fd, workers * MAX_SLOTS * _CELL)
    return fd


def clear_row(fd: int, worker: int) -> None:
    """Zero a row: a worker that died holds no connections any more."""
    with mmap.mmap(fd, 0) as table:
        start = worker * MAX_SLOTS * _CELL
        table[start:start + MAX_SLOTS * _CELL] = bytes(MAX_SLOTS * _CELL)


class Board:
    """One worker's view of the table."""

    def __init__(self, fd: int, workers: int, index: int):
        self._map = mmap.mmap(fd, workers * MAX_SLOTS * _CELL)
        os.close(fd)
        self.cells = memoryview(self._map).cast("q")
        self.workers = workers
        self.index = index

    def attach(self, services: Iterable[Service], slots: dict[tuple[str, str], int]) -> None:
        """Make each service and server write its count to this worker's cell and read
        the other workers' cells (slot key: (service, server), or (service, "") for the
        service's own client connections)."""
        for service in services:
            for key, holder in [((service.name, ""), service)] + [((service.name, s.name), s)
                                                                   for s in service.servers()]:
                slot = slots.get(key)
                if slot is None or holder.shared is not None:
                    continue
                holder.shared = SharedCount(self.cells, self.index * MAX_SLOTS + slot,
                                            tuple(w * MAX_SLOTS + slot for w in range(self.workers) if w != self.index))
                holder.active = holder.active  # publish what this process holds now
