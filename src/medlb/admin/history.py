"""The last hour of each service's numbers, in memory, for the page's charts.

A task samples the runtime's counters every INTERVAL seconds and keeps POINTS
samples per service (720 x 5 s = 1 hour). Nothing is written to disk: a restart
starts the charts afresh. Rates (connections/s, bytes/s, messages/s) are computed
between two samples, so a counter reset by a reload shows as zero, not negative.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from medlb.control import Control

INTERVAL = 5.0
POINTS = 720


class History:
    def __init__(self, control: "Control", interval: float = INTERVAL, points: int = POINTS,
                 clock: Callable[[], float] = time.time):
        self.control = control
        #: Wall-clock seconds: the page's charts show the time of day. Tests pass their own.
        self.clock = clock
        self.interval = interval
        self.points = points
        self.series: dict[str, collections.deque[dict[str, Any]]] = {}
        self._last: dict[str, tuple[float, int, int, int, float, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.control.collect()
            self.sample()

    def sample(self) -> None:
        now = self.clock()
        services = self.control.services
        for name in list(self.series):
            if name not in services:
                del self.series[name]
                self._last.pop(name, None)
        for name, service in services.items():
            servers = list(service.servers())
            total = service.total
            traffic = sum(s.bytes_to_server + s.bytes_to_client for s in servers)
            stats = service.mllp_stats
            messages = sum(stats.messages.values()) if stats else 0
            ack_sum = stats.ack_latency.sum if stats else 0.0
            ack_count = stats.ack_latency.count if stats else 0
            point: dict[str, Any] = {
                "at": round(now, 3),
                "active": service.active,
                "up": sum(1 for s in servers if s.available),
                "servers": len(servers),
                "in_flight": stats.in_flight if stats else 0,
                "conn_rate": 0.0, "bytes_rate": 0.0, "msg_rate": 0.0, "ack_latency": None,
            }
            last = self._last.get(name)
            if last is not None:
                at, l_total, l_traffic, l_messages, l_ack_sum, l_ack_count = last
                dt = max(now - at, 1e-6)
                point["conn_rate"] = round(max(total - l_total, 0) / dt, 3)
                point["bytes_rate"] = round(max(traffic - l_traffic, 0) / dt, 1)
                point["msg_rate"] = round(max(messages - l_messages, 0) / dt, 3)
                if ack_count > l_ack_count:
                    point["ack_latency"] = round((ack_sum - l_ack_sum) / (ack_count - l_ack_count), 6)
            self._last[name] = (now, total, traffic, messages, ack_sum, ack_count)
            self.series.setdefault(name, collections.deque(maxlen=self.points)).append(point)

    def of(self, name: str) -> list[dict[str, Any]]:
        return list(self.series.get(name, ()))
