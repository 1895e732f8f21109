"""The Maglev table: same on every node, fair, weighted, and only a leaving server's
flows move. Flows are hashed into buckets the way the kernel does (kernel.jhash), so
the figures are those the kernel will produce."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from medlb.kernel.jhash import bucket
from medlb.kernel.maglev import DEFAULT_TABLE_SIZE, build_table, service_seed

SEED = service_seed("pacs-retrieve", "198.18.0.100")
FOUR = {"pacs1": 1, "pacs2": 1, "pacs3": 1, "pacs4": 1}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def flows(count: int) -> list[tuple[str, int]]:
    """`count` distinct client (address, port) pairs, the same on every run."""
    rng = random.Random(1304)
    seen: set[tuple[str, int]] = set()
    while len(seen) < count:
        seen.add((f"198.18.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}", rng.randrange(1024, 65536)))
    return sorted(seen)


def servers_of(table, clients) -> list[str | None]:
    return [table.server_for(bucket(address, port, seed=table.seed, size=table.size)) for address, port in clients]


def test_the_same_table_in_another_process_whatever_its_hash_salt():
    table = build_table(FOUR, seed=SEED)
    digest = hashlib.sha256(bytes(table.slots)).hexdigest()
    code = ("import hashlib; from medlb.kernel.maglev import build_table, service_seed; "
            "t = build_table({'pacs4': 1, 'pacs3': 1, 'pacs2': 1, 'pacs1': 1}, "
            "seed=service_seed('pacs-retrieve', '198.18.0.100')); "
            "print(hashlib.sha256(bytes(t.slots)).hexdigest(), t.servers)")
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt, "PYTHONPATH": SRC}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        assert out.split()[0] == digest, "another process (listing the servers in another order) built another table"


def test_the_seed_depends_on_service_and_vip_and_changes_the_table():
    assert service_seed("pacs-retrieve", "198.18.0.100") == SEED
    assert service_seed("pacs-retrieve", "198.18.0.101") != SEED
    assert service_seed("vna", "198.18.0.100") != SEED
    assert build_table(FOUR, seed=SEED) != build_table(FOUR, seed=service_seed("vna", "198.18.0.100"))


def test_four_equal_servers_share_the_buckets_and_the_flows_evenly():
    table = build_table(FOUR, seed=SEED)
    assert table.size == DEFAULT_TABLE_SIZE
    for share in table.shares().values():
        assert share == pytest.approx(0.25, abs=0.001)
    chosen = servers_of(table, flows(10_000))
    for name in FOUR:
        assert chosen.count(name) / len(chosen) == pytest.approx(0.25, abs=0.03), name


def test_weights_are_honoured_also_when_a_server_is_unavailable():
    table = build_table({"big": 3, "small": 1, "off": 0}, seed=SEED)
    assert table.servers == ("big", "small")
    shares = table.shares()
    assert shares["big"] == pytest.approx(0.75, abs=0.002)
    assert shares["small"] == pytest.approx(0.25, abs=0.002)
    table = build_table({"a": 3, "b": 1, "c": 1, "d": 1}, seed=SEED, available=["a", "b", "c"])
    assert table.shares() == pytest.approx({"a": 0.6, "b": 0.2, "c": 0.2}, abs=0.005)


def test_removing_one_of_four_moves_only_its_flows_about_a_quarter():
    clients = flows(10_000)
    before = servers_of(build_table(FOUR, seed=SEED), clients)
    after = servers_of(build_table(FOUR, seed=SEED, available=["pacs1", "pacs2", "pacs4"]), clients)
    moved = [(was, now) for was, now in zip(before, after) if was != now]
    fraction = len(moved) / len(clients)
    print(f"\nMaglev, 1 of 4 servers removed: {fraction:.4f} of 10000 flows moved "
          f"({len(moved)}), all from the removed server: {all(was == 'pacs3' for was, _ in moved)}")
    assert all(was == "pacs3" for was, _ in moved), "a flow of a server that stayed was moved"
    assert fraction == pytest.approx(0.25, abs=0.03)


def test_adding_a_server_back_moves_about_one_in_n_and_only_to_it():
    clients = flows(10_000)
    three = servers_of(build_table(FOUR, seed=SEED, available=["pacs1", "pacs2", "pacs3"]), clients)
    four = servers_of(build_table(FOUR, seed=SEED), clients)
    moved = [(was, now) for was, now in zip(three, four) if was != now]
    fraction = len(moved) / len(clients)
    print(f"\nMaglev, a 4th server added: {fraction:.4f} of 10000 flows moved, all to it: "
          f"{all(now == 'pacs4' for _, now in moved)}")
    assert all(now == "pacs4" for _, now in moved)
    assert fraction == pytest.approx(0.25, abs=0.03)


def test_a_server_added_to_the_config_moves_few_buckets_between_the_others():
    """A config change rebuilds the base table: plain Maglev, minimal but not zero
    disruption among the servers that stay (pins keep their established flows)."""
    before = build_table({"pacs1": 1, "pacs2": 1, "pacs3": 1}, seed=SEED)
    after = build_table(FOUR, seed=SEED)
    moved = before.moved_buckets(after)
    between_others = [b for b in moved if after.server_for(b) != "pacs4"]
    print(f"\nMaglev, a server added to the config: {len(moved) / before.size:.4f} of the buckets moved, "
          f"{len(between_others)} of them between the other servers")
    assert len(moved) / before.size == pytest.approx(0.25, abs=0.01)
    assert len(between_others) / before.size < 0.01


def test_the_kernel_form_hash_mod_n_moves_flows_of_servers_that_stayed():
    """Why a table and not nftlb's `jhash mod N map { ranges }`: with N-1 ranges the
    survivors' flows move too."""
    clients = flows(10_000)
    names = sorted(FOUR)
    rest = [name for name in names if name != "pacs2"]
    before = [names[bucket(a, p, seed=SEED, size=4)] for a, p in clients]
    after = [rest[bucket(a, p, seed=SEED, size=3)] for a, p in clients]
    survivors_moved = sum(1 for was, now in zip(before, after) if was != now and was != "pacs2") / len(clients)
    print(f"\njhash mod N, 1 of 4 removed: {survivors_moved:.1%} of flows moved between servers that stayed")
    assert survivors_moved > 0.05


def test_no_servers_gives_an_empty_table_and_bad_sizes_are_refused():
    empty = build_table({}, seed=SEED)
    assert empty.servers == () and empty.server_for(12) is None
    assert set(empty.assignment()) == {None}
    assert build_table(FOUR, seed=SEED, available=[]).servers == ()
    with pytest.raises(ValueError, match="not in the pool"):
        build_table(FOUR, seed=SEED, available=["pacs9"])
    with pytest.raises(ValueError, match="prime"):
        build_table(FOUR, seed=SEED, size=65536)
    with pytest.raises(ValueError, match="seed"):
        build_table(FOUR, seed=0)
    with pytest.raises(ValueError, match="negative"):
        build_table({"a": -1}, seed=SEED)
