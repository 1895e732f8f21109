"""Schedulers: pick one server from the candidates that may take new work.

Candidates are already filtered (state online, health up, weight > 0, not tried yet),
so a scheduler only balances. All of them honour weights.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

if TYPE_CHECKING:
    from medlb.runtime.model import Server


class Scheduler(Protocol):
    def pick(self, candidates: Sequence[Server], key: bytes | None) -> Server | None: ...


class RoundRobin:
    """Smooth weighted round robin (as in nginx): weights 1,2,3 give a,b,c,b,c,c spread
    evenly rather than in bursts, and exactly 1:2:3 over every six picks.

    The picks are numbered, and pick number n is the n-th of one sequence that depends
    only on the candidates. With workers, `cursor` hands out the numbers from a counter
    all of them share (workers/board.py), so the rotation is exact over all workers
    together, as HAProxy's is over its threads: each worker walks the sequence from its
    last pick to the number it drew, skipping the picks the others made. Without a
    cursor the numbers are this process's own.
    """

    #: The longest walk (steps times candidates) a pick makes to find its place again
    #: after the candidates changed; beyond it the sequence restarts at this pick, which
    #: costs exactness across workers for one round rather than a stalled event loop.
    MAX_WALK = 100_000

    def __init__(self, cursor: Callable[[], int] | None = None) -> None:
        self._cursor = cursor
        self._picks = 0
        self._candidates: list[Server] = []
        self._weights: list[int] = []
        self._current: list[int] = []
        self._period = 0
        #: The number of the next pick the state stands at.
        self._position = 0

    def pick(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        if self._cursor is None:
            number, self._picks = self._picks, self._picks + 1
        else:
            number = self._cursor()
        # Servers compare by identity, and a server's weight is fixed for the life of the
        # Service that holds this scheduler (a reload builds new ones).
        if candidates != self._candidates or number < self._position:
            self._restart(candidates, number)
        if number != self._position:
            behind = number - self._position
            if behind >= self._period:  # the state repeats every period: skip whole rounds
                self._position += behind - behind % self._period
                behind %= self._period
            if behind * len(candidates) > self.MAX_WALK:
                self._restart(candidates, number, walk=False)
            while self._position < number:
                self._step()
        return candidates[self._step()]

    def _restart(self, candidates: Sequence[Server], number: int, walk: bool = True) -> None:
        """Start the sequence of these candidates at its beginning: the round that `number`
        is in (every worker finds the same place), or `number` itself."""
        divisor = math.gcd(*(server.weight for server in candidates))
        self._candidates = list(candidates)
        self._weights = [server.weight // divisor for server in candidates]
        self._current = [0] * len(candidates)
        self._period = sum(self._weights)
        into = number % self._period
        self._position = number - into if walk and into * len(candidates) <= self.MAX_WALK else number

    def _step(self) -> int:
        """One pick of the sequence: the index of the candidate it picks."""
        current, weights = self._current, self._weights
        best, best_weight = 0, -math.inf
        for index in range(len(weights)):
            value = current[index] = current[index] + weights[index]
            if value > best_weight:
                best, best_weight = index, value
        current[best] -= self._period
        self._position += 1
        return best


class LeastConn:
    """Weighted least connections: the lowest (active + 1) / weight wins.

    Ties go round the candidates in turn, so equal servers still share new work evenly
    when connections are short.
    """

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        count = len(candidates)
        if not count:
            return None
        self._turn = (self._turn + 1) % count
        best: Server | None = None
        best_load = math.inf
        for offset in range(count):
            server = candidates[(self._turn + offset) % count]
            load = (server.cluster_active + 1) / server.weight
            if load < best_load:
                best, best_load = server, load
        return best


def rendezvous_score(key: bytes, server: Server) -> float:
    """Weighted highest-random-weight score: the server with the top score owns the key.

    When a server leaves, only the keys it owned move; the rest stay put. This is the
    consistent hash the source scheduler and (later) HL7 ordering keys rely on.
    """
    digest = hashlib.blake2b(key, digest_size=8, key=server.hash_seed).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
    return -server.weight / math.log(unit)


class SourceHash:
    """Source address hash: one client keeps its server while that server is available."""

    def pick(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        if not candidates:
            return None
        if key is None:
            return candidates[0]
        return max(candidates, key=lambda server: rendezvous_score(key, server))


def make_scheduler(name: str, cursor: Callable[[], int] | None = None) -> Scheduler:
    """`cursor`: with workers, the shared numbering of round robin's picks."""
    if name == "roundrobin":
        return RoundRobin(cursor)
    if name == "leastconn":
        return LeastConn()
    if name == "source":
        return SourceHash()
    raise ValueError(f"scheduler {name!r} is not available")
