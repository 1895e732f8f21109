"""Reading `nft -j list table ...` output: which objects a medlb table holds, and counts.

Pure functions over the parsed JSON, so the full apply can find objects a reload left
behind and the API can show counters without running nft in the tests of either.
nft 1.0.6 cannot render some rule statements as JSON (`update @map { k : v }` prints
"stmt ops map have no json callback" on stderr); rules are therefore never read back
from a listing, only objects, elements and counters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Listing = Mapping[str, Any]


@dataclass(frozen=True)
class TableObjects:
    """The named objects of one table, by kind."""

    family: str
    table: str
    chains: frozenset[str] = field(default_factory=frozenset)
    maps: frozenset[str] = field(default_factory=frozenset)
    sets: frozenset[str] = field(default_factory=frozenset)
    counters: frozenset[str] = field(default_factory=frozenset)


def _items(listing: Listing, kind: str) -> list[dict[str, Any]]:
    return [entry[kind] for entry in listing.get("nftables", ()) if kind in entry]


def table_objects(listing: Listing, family: str, table: str) -> TableObjects:
    """The objects of `family table` in a listing (empty kinds when the table is absent)."""
    def names(kind: str) -> frozenset[str]:
        return frozenset(item["name"] for item in _items(listing, kind)
                         if item.get("family") == family and item.get("table") == table)

    return TableObjects(family, table, chains=names("chain"), maps=names("map"), sets=names("set"),
                        counters=names("counter"))


def counters(listing: Listing, family: str | None = None, table: str | None = None) -> dict[str, tuple[int, int]]:
    """Named counter -> (packets, bytes), of one table when `family` and `table` say
    which (a listing of the whole ruleset holds other programs' counters too)."""
    return {item["name"]: (int(item.get("packets", 0)), int(item.get("bytes", 0)))
            for item in _items(listing, "counter")
            if table is None or (item.get("family") == family and item.get("table") == table)}


def map_elements(listing: Listing, name: str) -> dict[Any, Any]:
    """A map's elements as key -> value (concatenated keys become tuples).

    A dynamic map's element may carry its timeout as {"elem": {"val": key, ...}}.
    """
    for item in _items(listing, "map"):
        if item["name"] != name:
            continue
        elements = {}
        for key, value in item.get("elem", ()):
            if isinstance(key, dict) and "elem" in key:
                key = key["elem"]["val"]
            if isinstance(key, dict) and "concat" in key:
                key = tuple(key["concat"])
            elements[key] = value
        return elements
    raise KeyError(f"no map {name!r} in the listing")
