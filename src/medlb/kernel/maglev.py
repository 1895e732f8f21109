"""Maglev consistent hashing (Eisenbud et al., NSDI 2016): the table the kernel indexes.

The kernel hashes each flow into a bucket (`jhash ip saddr . tcp sport mod SIZE seed S`)
and a map turns the bucket into a server: bucket `b` is served by
`table.servers[table.slots[b]]`. So the table must have exactly `size` entries, one per
value the kernel's `mod` can produce, and must be the same on every node of a pair, on
every reload and after every restart. It therefore depends only on the server names,
their weights and states, the size and an explicit seed, hashed with BLAKE2b; never on Python's
`hash()` (salted per process) or on the order servers are listed in.

Why Maglev and not nftlb's `jhash mod N map { ranges }`: when one of N servers leaves,
only the buckets it held move (about 1/N of flows), where the ranges shift under the
servers that stay; and on top of plain Maglev, `build_table` keeps the buckets of the
servers that stay exactly where they were (see there). Measured in the unit tests.
"""

from __future__ import annotations

import functools
import hashlib
from array import array
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

#: The paper's and Envoy's and Katran's default: prime, and > 100 x the servers a pool
#: has, which keeps every server's share within 1% of its weight.
DEFAULT_TABLE_SIZE = 65537
#: The kernel's jhash seed and `meta mark` are 32 bits wide.
SEED_BITS = 32
#: No server: the value of an empty table's slots (a pool with nothing to take flows).
NO_SERVER = -1


def is_prime(number: int) -> bool:
    if number < 2:
        return False
    if number % 2 == 0:
        return number == 2
    divisor = 3
    while divisor * divisor <= number:
        if number % divisor == 0:
            return False
        divisor += 2
    return True


def service_seed(service: str, vip: str) -> int:
    """The seed of a service's table and of the kernel's flow hash.

    Derived from the service's name and its (first) VIP, so both nodes of a pair and
    every restart compute the same table and hash every flow the same way, while two
    services do not share one. Never 0: nft's jhash without a seed is random per rule.
    """
    digest = hashlib.blake2b(f"{service}\0{vip}".encode(), digest_size=8, person=b"medlb-seed").digest()
    return int.from_bytes(digest, "big") % (2**SEED_BITS - 1) + 1


def _permutation(name: str, seed: int, size: int) -> tuple[int, int]:
    """A server's (offset, skip): its preference list is offset + j*skip mod size."""
    digest = hashlib.blake2b(name.encode(), digest_size=16, key=seed.to_bytes(8, "big"),
                             person=b"medlb-maglev").digest()
    offset = int.from_bytes(digest[:8], "big") % size
    skip = int.from_bytes(digest[8:], "big") % (size - 1) + 1
    return offset, skip


@dataclass(frozen=True, eq=False)
class MaglevTable:
    """A filled table: `slots[bucket]` is an index into `servers`, or NO_SERVER."""

    size: int
    seed: int
    #: The servers that take new flows (weight > 0), sorted by name.
    servers: tuple[str, ...]
    slots: array = field(repr=False)

    def server_for(self, bucket: int) -> str | None:
        index = self.slots[bucket]
        return None if index == NO_SERVER else self.servers[index]

    def assignment(self) -> list[str | None]:
        """The server of every bucket, in bucket order."""
        names: list[str | None] = [*self.servers, None]  # NO_SERVER (-1) picks the None
        return [names[index] for index in self.slots]

    def counts(self) -> dict[str, int]:
        """How many buckets each server holds."""
        counts = [0] * len(self.servers)
        for index in self.slots:
            if index != NO_SERVER:
                counts[index] += 1
        return dict(zip(self.servers, counts))

    def shares(self) -> dict[str, float]:
        """Each server's fraction of the buckets (so of new flows, for a uniform hash)."""
        return {name: count / self.size for name, count in self.counts().items()}

    def moved_buckets(self, other: MaglevTable) -> list[int]:
        """The buckets whose server differs in `other` (same size): the flows that move."""
        if other.size != self.size:
            raise ValueError(f"tables of different sizes ({self.size}, {other.size}) do not compare bucket by bucket")
        return [bucket for bucket, (mine, theirs) in enumerate(zip(self.assignment(), other.assignment()))
                if mine != theirs]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MaglevTable):
            return NotImplemented
        # The slots index into `servers`: equal servers and equal slots (compared in C,
        # 65,537 of them on every kernel sync) mean an equal assignment.
        return (self.size, self.seed, self.servers, self.slots) == (other.size, other.seed, other.servers, other.slots)

    def __hash__(self) -> int:
        return hash((self.size, self.seed, self.servers))


@functools.lru_cache(maxsize=32)
def _filled(names: tuple[str, ...], weights: tuple[int, ...], seed: int, size: int) -> array:
    """`_fill`, remembered: the base table of a pool changes only with its config, and
    every health or state change rebuilds the table from it. Callers never modify it."""
    return _fill(names, list(weights), seed, size)


def _fill(names: tuple[str, ...], weights: list[int], seed: int, size: int) -> array:
    """Maglev's population: servers take turns claiming their next preferred free slot.

    A server of weight w claims in a turn only while it holds fewer than
    turn * w / max_weight slots, so shares follow the weights (Envoy's and Katran's V2
    weighting). Measured: 65537 slots and 4 servers fill in about 0.1 s of pure Python.
    """
    slots = array("i", [NO_SERVER]) * size
    max_weight = max(weights)
    offsets, skips = zip(*(_permutation(name, seed, size) for name in names))
    next_choice = [0] * len(names)
    claimed = [0] * len(names)
    filled = 0
    turn = 0
    while True:
        turn += 1
        for index, weight in enumerate(weights):
            if claimed[index] * max_weight >= turn * weight:
                continue
            offset, skip, choice = offsets[index], skips[index], next_choice[index]
            slot = (offset + choice * skip) % size
            while slots[slot] != NO_SERVER:
                choice += 1
                slot = (offset + choice * skip) % size
            slots[slot] = index
            next_choice[index] = choice + 1
            claimed[index] += 1
            filled += 1
            if filled == size:
                return slots


def build_table(weights: Mapping[str, int] | Iterable[tuple[str, int]], *, seed: int,
                size: int = DEFAULT_TABLE_SIZE, available: Collection[str] | None = None) -> MaglevTable:
    """The table for a pool: server name -> weight, of which `available` take new flows.

    `weights` are the pool's configured servers (weight 0 takes nothing); `available`
    (default: all) those online and up. A plain Maglev table of the available servers
    would also move a few buckets between servers that stayed (measured: 26 of 65537
    when 1 of 4 leaves), so the table is composed of two: the base table of every
    configured server, which does not change while the config does not, and for the
    buckets whose base server is unavailable, a Maglev table of the available ones.
    So a server that goes down or is drained moves only its own buckets, spread over
    the others by weight, and when it comes back exactly those return to it; and the
    result still depends only on the config, the states and the seed.
    """
    if not is_prime(size):
        raise ValueError(f"the Maglev table size must be a prime number, not {size}")
    if not 0 < seed < 2**SEED_BITS:
        raise ValueError(f"the seed must be a nonzero {SEED_BITS}-bit number, not {seed}")
    pairs = dict(weights.items() if isinstance(weights, Mapping) else weights)
    for name, weight in pairs.items():
        if weight < 0:
            raise ValueError(f"server {name!r} has a negative weight ({weight})")
    configured = tuple(sorted(name for name, weight in pairs.items() if weight > 0))
    if available is None:
        available = configured
    unknown = set(available) - set(pairs)
    if unknown:
        raise ValueError(f"available servers {sorted(unknown)} are not in the pool")
    taking = tuple(name for name in configured if name in set(available))
    if len(configured) >= size:
        raise ValueError(f"a Maglev table of {size} slots cannot hold {len(configured)} servers")
    if not taking:
        return MaglevTable(size, seed, (), array("i", [NO_SERVER]) * size)
    base = _filled(configured, tuple(pairs[name] for name in configured), seed, size)
    if taking == configured:
        return MaglevTable(size, seed, configured, base)
    fallback = _filled(taking, tuple(pairs[name] for name in taking), seed, size)
    index_of = {name: index for index, name in enumerate(taking)}
    base_to_taking = [index_of.get(name, NO_SERVER) for name in configured]
    slots = array("i", (base_to_taking[chosen] if base_to_taking[chosen] != NO_SERVER else fallback[slot]
                        for slot, chosen in enumerate(base)))
    return MaglevTable(size, seed, taking, slots)
