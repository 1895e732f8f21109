"""Counts every worker shares: open connections per server (what `leastconn` needs)
and round robin's place in its rotation.

With one process, least connections compares the connections that process holds. With
N workers each would see only its own share, and two workers could both send their next
long DICOM association to the same server. So every worker writes its own count of
open connections per server into a shared memory table (a memfd the control process
creates and passes along with the sockets), one row per worker, and reads the whole
column when it picks. Each cell has one writer; readers may see a count a moment old,
which is as exact as "least connections" needs to be.

Round robin needs more: one numbering of the picks of all workers, or each rotates on
its own and nine clients over three servers land 4/3/2. Those counters, one per pool
tier of a round robin service, are the table's last row, and every worker takes the
next number from them atomically: a locked add (libatomic's fetch-add, through
ctypes), or where the C library lacks it, a lock on the cell (fcntl, slower).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import mmap
import os
from typing import Callable, Iterable

from medlb.runtime import Service
from medlb.runtime.model import SharedCount

#: Servers (over all services, including ones a reload removed) a table has room for.
MAX_SLOTS = 4096
_CELL = 8
_SEQ_CST = 5  # __ATOMIC_SEQ_CST


def _fetch_add() -> Callable[[int, int, int], int] | None:
    """libatomic's __atomic_fetch_add_8 (one `lock xadd` on x86-64), if it is installed."""
    name = ctypes.util.find_library("atomic")
    try:
        function = ctypes.CDLL(name or "libatomic.so.1").__atomic_fetch_add_8
    except (OSError, AttributeError):
        return None
    function.restype, function.argtypes = ctypes.c_int64, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int]
    return function  # type: ignore[no-any-return]


FETCH_ADD = _fetch_add()


def create(workers: int) -> int:
    """A zeroed table for `workers` rows and the cursors' row, as a file descriptor to
    hand to the workers."""
    fd = os.memfd_create("medlb-connections", os.MFD_CLOEXEC)
    os.ftruncate(fd, (workers + 1) * MAX_SLOTS * _CELL)
    return fd


def clear_row(fd: int, worker: int) -> None:
    """Zero a row: a worker that died holds no connections any more."""
    with mmap.mmap(fd, 0) as table:
        start = worker * MAX_SLOTS * _CELL
        table[start:start + MAX_SLOTS * _CELL] = bytes(MAX_SLOTS * _CELL)


class SharedCursor:
    """A counter in the table that every worker draws the next number from, atomically."""

    __slots__ = ("_draw",)

    def __init__(self, board: "Board", cell: int, fetch_add: Callable[[int, int, int], int] | None = FETCH_ADD):
        if fetch_add is not None:
            address = ctypes.addressof(ctypes.c_int64.from_buffer(board._map, cell * _CELL))
            self._draw: Callable[[], int] = lambda: fetch_add(address, 1, _SEQ_CST)
        else:
            self._draw = lambda: board.draw_locked(cell)

    def __call__(self) -> int:
        return self._draw()


def cursor_key(pool: str, tier: str) -> str:
    """A cursor's slot key beside the servers' (a server name has no ':')."""
    return f"cursor:{pool}:{tier}"


class Board:
    """One worker's view of the table."""

    def __init__(self, fd: int, workers: int, index: int):
        self._map = mmap.mmap(fd, (workers + 1) * MAX_SLOTS * _CELL)
        self._fd = fd  # kept open: the cursors' fallback locks cells through it
        self.cells = memoryview(self._map).cast("q")
        self.workers = workers
        self.index = index

    def draw_locked(self, cell: int) -> int:
        """The cursor's next number under a lock on its cell (without libatomic)."""
        fcntl.lockf(self._fd, fcntl.LOCK_EX, _CELL, cell * _CELL)
        try:
            number = self.cells[cell]
            self.cells[cell] = number + 1
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, _CELL, cell * _CELL)
        return number

    def attach(self, services: Iterable[Service], slots: dict[tuple[str, str], int]) -> None:
        """Make each service and server write its count to this worker's cell and read
        the other workers' cells (slot key: (service, server), or (service, "") for the
        service's own client connections), and give round robin its shared cursors
        (slot key: (service, cursor_key(pool, tier)))."""
        for service in services:
            for pool in service.pools:
                for tier in ("primary", "backup"):
                    slot = slots.get((service.name, cursor_key(pool, tier)))
                    if slot is not None and (pool, tier) not in service.cursors:
                        service.cursors[(pool, tier)] = SharedCursor(self, self.workers * MAX_SLOTS + slot)
            for key, holder in [((service.name, ""), service)] + [((service.name, s.name), s)
                                                                   for s in service.servers()]:
                slot = slots.get(key)
                if slot is None or holder.shared is not None:
                    continue
                holder.shared = SharedCount(self.cells, self.index * MAX_SLOTS + slot,
                                            tuple(w * MAX_SLOTS + slot for w in range(self.workers) if w != self.index))
                holder.active = holder.active  # publish what this process holds now
