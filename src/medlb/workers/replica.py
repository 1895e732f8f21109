"""What crosses between the control process's runtime and the workers' replicas.

Down to the workers goes the *decided* state (`Runtime.snapshot`): each server's operator
state and health, each pool's active tier and failover flag. Workers do not run health
checks or decide failovers; they copy it (`Runtime.adopt`), so every worker routes
exactly as the control process decided.
Up from the workers come counters, which the control process adds together: the API,
the page and /metrics then read the same objects as with one process.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from medlb.runtime import Runtime
from medlb.runtime.histogram import Histogram
from medlb.runtime.stats import Recent

#: Server fields the data plane bumps.
SERVER_COUNTERS = ("active", "total", "bytes_to_server", "bytes_to_client", "connect_failures", "messages",
                   "in_flight")
#: Fields that say "now" rather than "so far": a worker that exited adds none of them.
GAUGES = frozenset({"active", "in_flight", "queued", "partial_frame_bytes"})


def counters(runtime: Runtime, tls_stats: dict[str, Any]) -> dict[str, Any]:
    """A worker's counters, as plain picklable objects."""
    result: dict[str, Any] = {}
    for service in runtime.services.values():
        result[service.name] = {
            "service": service.counters,
            "servers": {s.name: tuple(getattr(s, f) for f in SERVER_COUNTERS) for s in service.servers()},
            "mllp": service.mllp_stats, "http": service.http_stats, "dicom": service.dicom,
            "tls": tls_stats.get(service.name),
        }
    return result


def fold_counters(runtime: Runtime, parts: list[dict[str, Any]], retired: list[dict[str, Any]]) -> None:
    """Set the control runtime's counters to the sum over the workers' `parts`, plus
    what workers that have since exited counted (`retired`, gauges left out)."""
    everything = [(part, False) for part in parts] + [(part, True) for part in retired]
    for service in runtime.services.values():
        mine = [(part[service.name], retired) for part, retired in everything if service.name in part]
        _fold_object(service.counters, [(m["service"], r) for m, r in mine])
        for attribute, key in (("mllp_stats", "mllp"), ("http_stats", "http"), ("dicom", "dicom")):
            target = getattr(service, attribute)
            if target is not None:
                _fold_object(target, [(m[key], r) for m, r in mine if m[key] is not None])
        if service.tls is not None:
            _fold_object(service.tls.stats, [(m["tls"], r) for m, r in mine if m["tls"] is not None])
        for server in service.servers():
            for index, name in enumerate(SERVER_COUNTERS):
                setattr(server, name, sum(m["servers"][server.name][index] for m, r in mine
                                          if server.name in m["servers"] and not (r and name in GAUGES)))


def _fold_object(target: Any, sources: list[tuple[Any, bool]]) -> None:
    for spec in dataclasses.fields(target):
        if spec.name.startswith("_") or spec.name == "max_labels":
            continue
        setattr(target, spec.name, _sum(getattr(target, spec.name), spec.name,
                                         [(getattr(s, spec.name), r) for s, r in sources]))


def _sum(current: Any, name: str, values: list[tuple[Any, bool]]) -> Any:
    if isinstance(current, bool):
        return current
    if isinstance(current, Recent):  # the last failures of every worker, by time
        return Recent.merged([recent for recent, _ in values], current.limit)
    if isinstance(current, (int, float)):
        return type(current)(sum(v for v, retired in values if not (retired and name in GAUGES)))
    if isinstance(current, Histogram):
        total = Histogram(current.bounds)
        for histogram, _ in values:
            total.counts = [a + b for a, b in zip(total.counts, histogram.counts)]
            total.sum += histogram.sum
            total.count += histogram.count
        return total
    if isinstance(current, dict):
        merged: dict[Any, Any] = Counter() if isinstance(current, Counter) else {}
        keys: dict[Any, None] = dict.fromkeys(current) if not isinstance(current, Counter) else {}
        for table, _ in values:
            keys.update(dict.fromkeys(table))
        for key in keys:
            present = [(table[key], retired) for table, retired in values if key in table]
            sample = present[0][0] if present else current.get(key)
            if dataclasses.is_dataclass(sample):
                item = type(sample)()
                _fold_object(item, present)
                merged[key] = item
            elif isinstance(sample, Histogram):
                merged[key] = _sum(sample, name, present)
            else:
                merged[key] = sum(v for v, retired in present if not (retired and name in GAUGES))
        return merged
    return current
