"""Source-IP persistence entries, copied from the active node to the passive one.

Why: a modality bound to one archive node by `persistence: source-ip` must come back
to that node after the pair fails over, not be placed afresh (a study split over two
archive nodes). The entries live in each data-plane worker's memory (in the control
process's with `workers: 1`), so without this they die with the node.

Why only from the active node, as a whole snapshot every `ha.persistence_sync_interval`:
only the active node has clients, so its tables are the truth; the passive node has
none of its own to lose. A snapshot needs no order and heals a lost message with the
next one. What travels is the client key, the server's name and the time left (not an
instant: the clocks of the two nodes may differ); the passive node keeps an entry only
for a source-IP service and a server its own config has, and at most the service's
`max_entries`. What a failover can lose is at most one interval of new entries.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from medlb import logs
from medlb.tasks import cancel
from medlb.ha.channel import PairSync, PeerUnreachable, SyncRefused, sync_routes
from medlb.runtime.persistence import Tables, export_tables, from_wire, load_tables, to_wire

if TYPE_CHECKING:
    from medlb.app import App
    from medlb.control import Control

log = logs.get_logger("medlb.ha")

DEFAULT_INTERVAL = 2.0


class StickySync:
    """This node's side: while active, pushes its entries to the peer; else takes the peer's."""

    def __init__(self, app: App, pair: PairSync):
        self.app, self.pair = app, pair
        self._error: str | None = None
        #: When this node last sent entries and how many; when it last took some and how many.
        self.sent: tuple[float, int] | None = None
        self.taken: tuple[float, int] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """`ha.persistence_sync_interval` of the config this node runs (a reload changes it)."""
        ha = self.app.loaded.config.ha
        return ha.persistence_sync_interval if ha is not None else DEFAULT_INTERVAL

    @property
    def push_timeout(self) -> float:
        """How long one push may take (the peer hands the entries to its workers first):
        the pair's `ha.peer_timeout`, which its status calls take too."""
        return self.pair.timeout

    async def tables(self) -> Tables:
        if self.app.workers is not None:
            return await self.app.workers.sticky_tables()
        return export_tables(self.app.runtime.services, time.monotonic())

    async def load(self, tables: Tables) -> int:
        if self.app.workers is not None:
            taken = await self.app.workers.load_sticky(tables)
        else:
            taken = load_tables(self.app.runtime.services, tables, time.monotonic())
        self.taken = (time.time(), taken)
        return taken

    def view(self) -> dict[str, Any]:
        """For GET /api/v1/ha: what went to the peer and came from it, and when."""
        return {"interval": self.interval, "error": self._error,
                "sent_at": self.sent[0] if self.sent else None, "sent": self.sent[1] if self.sent else 0,
                "taken_at": self.taken[0] if self.taken else None, "taken": self.taken[1] if self.taken else 0}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.pair.role() == "MASTER" and self.pair.state.up:
                await self.push()

    async def push(self) -> bool:
        """Send this node's entries to the peer (nothing when it has none); True when sent."""
        tables = await self.tables()
        if not any(tables.values()):
            return False
        try:
            status, answer = await self.pair.client.call(
                "POST", "/persistence", {"node": self.pair.node.name, "tables": to_wire(tables)},
                self.push_timeout)
            if status != 200:
                raise PeerUnreachable.answered(self.pair.peer.name, status, answer)
        except PeerUnreachable as exc:
            if self._error != str(exc):
                log.warning("ha_persistence_not_sent", peer=self.pair.peer.name, error=str(exc))
            self._error = str(exc)
            return False
        if self._error is not None:
            log.event("ha_persistence_sent", peer=self.pair.peer.name)
        self._error = None
        self.sent = (time.time(), sum(len(entries) for entries in tables.values()))
        return True


@sync_routes
def _sticky_routes(routes: APIRouter, control: Control) -> None:
    @routes.post("/persistence")
    async def take(request: Request) -> dict[str, Any]:
        """Load the active peer's source-IP entries into this node's tables; refused on
        an active node, whose own clients' entries are the ones that count."""
        sync = control.sticky
        if sync is None:
            raise SyncRefused(503, "this node's persistence sync has not started yet")
        if sync.pair.role() == "MASTER":
            raise SyncRefused(409, f"{sync.pair.node.name} is active: it keeps its own persistence entries")
        try:
            body = await request.json()
            tables = from_wire(body.get("tables") if isinstance(body, dict) else None)
        except ValueError as exc:
            raise SyncRefused(400, f"not a set of persistence entries: {exc}") from None
        return {"node": sync.pair.node.name, "taken": await sync.load(tables)}
