"""Schedulers: pick one server from the candidates that may take new work.

Candidates are already filtered (state online, health up, weight > 0, not tried yet),
so a scheduler only balances. All of them honour weights.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    from medlb.runtime.model import Server


class Scheduler(Protocol):
    def pick(self, candidates: Sequence[Server], key: bytes | None) -> Server | None: ...


class RoundRobin:
    """Smooth weighted round robin (as in nginx): weights 1,2,3 give a,b,c,b,c,c spread
    evenly rather than in bursts, and exactly 1:2:3 over every six picks."""

    def __init__(self) -> None:
        self._current: dict[int, int] = {}

    def pick(self, candidates: Sequence[Server], key: bytes | None = None) -> Server | None:
        if not candidates:
            return None
        total = 0
        best: Server | None = None
        best_weight = 0
        current = self._current
        for server in candidates:
            weight = current.get(server.uid, 0) + server.weight
            current[server.uid] = weight
            total += server.weight
            if best is None or weight > best_weight:
                best, best_weight = server, weight
        assert best is not None
        current[best.uid] = best_weight - total
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


def make_scheduler(name: str) -> Scheduler:
    if name == "roundrobin":
        return RoundRobin()
    if name == "leastconn":
        return LeastConn()
    if name == "source":
        return SourceHash()
    raise ValueError(f"scheduler {name!r} is not available")
