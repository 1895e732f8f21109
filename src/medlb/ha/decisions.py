"""The operator decisions both nodes of the pair carry: server states and failover latches.

What travels: every server's operator state (online, drain, halt) and every pool's
manual-failback latch, each with when it last changed and (servers) who changed it:
the rows of the store's `server_state` and `pool_failover` tables. A halt made at
3 a.m. on the active node must still be in force after the pair fails over.

Why a full snapshot merged decision by decision, and not a log of actions: a node
sends all its decisions (a few rows a server) and the other takes each one that is
newer than its own. Nothing has to be replayed in order, a lost message is healed by
the next one, and both directions use the one rule, so two nodes that changed things
while apart end with the same set: for each decision the later change wins (ties
broken the same way on both nodes). That needs the nodes' clocks in step (docs/ha.md).

Why a latch travels only from the active node: a pool's latch is set by the node's
own health checks when its primaries fail. The active node's latch is what its
clients get, and what the peer must keep after a failover; the passive node's is its
own guess from where it stands, and must not move the active node to its backup.

When: an operator's change is pushed at once (the API does not wait for it: a peer
that does not answer is marked out of date), the peer stores it, audits it as
`peer:<node>` and has its workers route by it before it answers. The watcher pushes
again whenever the peer's decisions differ from this node's. A starting node takes its
peer's decisions before its track script may say alive (`ha.decisions_wait` at most).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request

from medlb import logs
from medlb.tasks import cancel
from medlb.ha.channel import PairSync, PeerUnreachable, SyncRefused, sync_caller, sync_routes
from medlb.runtime import NotFound, SetFailedOver, SetState
from medlb.runtime.events import STATES

if TYPE_CHECKING:
    from medlb.app import App
    from medlb.control import Control

log = logs.get_logger("medlb.ha")

SERVER, LATCH = "server", "latch"
#: The value a decision has when no row says otherwise.
DEFAULTS = {SERVER: "online", LATCH: "false"}
#: How often a starting node asks an unreachable peer again, within decisions_wait.
RETRY_EVERY = 0.5

#: (kind, service, server or pool)
Key = tuple[str, str, str]


@dataclass(frozen=True)
class Decision:
    """One decision: a server's state, or "true"/"false" for a pool's latch."""

    value: str
    changed_at: float
    changed_by: str = ""

    def beats(self, other: Decision) -> bool:
        """The later change wins; on the same instant the larger value, then the larger
        name, so both nodes pick the same one."""
        return (self.changed_at, self.value, self.changed_by) > (other.changed_at, other.value, other.changed_by)


Decisions = dict[Key, Decision]


def to_take(mine: Decisions, theirs: Decisions) -> Decisions:
    """The peer's decisions that win over this node's (all of them for keys it lacks)."""
    return {key: decision for key, decision in theirs.items()
            if key not in mine or decision.beats(mine[key])}


def shared(decisions: Decisions, role: str) -> Decisions:
    """What this node sends: every server state, and its latches only while it is active."""
    return {key: decision for key, decision in decisions.items() if key[0] == SERVER or role == "MASTER"}


def digest(decisions: Decisions) -> str:
    """Which decisions are in force, not when they were made: two nodes whose every
    server and latch would route alike have the same digest."""
    in_force = sorted([*key, decision.value] for key, decision in decisions.items()
                      if decision.value != DEFAULTS[key[0]])
    return hashlib.sha256(json.dumps(in_force).encode()).hexdigest()


def to_wire(decisions: Decisions) -> list[dict[str, Any]]:
    return [{"kind": kind, "service": service, "subject": subject, "value": decision.value,
             "changed_at": decision.changed_at, "changed_by": decision.changed_by}
            for (kind, service, subject), decision in sorted(decisions.items())]


def from_wire(rows: Any) -> Decisions:
    """The decisions a peer sent; ValueError naming the first that is not one."""
    if not isinstance(rows, list):
        raise ValueError("decisions must be a list")
    found: Decisions = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"decision {index} is not an object")
        kind, value, at = row.get("kind"), row.get("value"), row.get("changed_at")
        texts = (row.get("service"), row.get("subject"), row.get("changed_by", ""))
        if kind not in DEFAULTS or not all(isinstance(text, str) for text in texts) \
                or not isinstance(at, (int, float)) or isinstance(at, bool) or not math.isfinite(at):
            raise ValueError(f"decision {index} is not a kind, service, subject and time")
        if value not in (STATES if kind == SERVER else ("true", "false")):
            raise ValueError(f"decision {index}: {value!r} is not a {kind} value")
        found[(kind, texts[0], texts[1])] = Decision(value, float(at), texts[2])
    return found


class DecisionSync:
    """This node's side: pushes its decisions to the peer and takes the peer's."""

    def __init__(self, app: App, pair: PairSync, wait: float):
        self.app, self.pair, self.wait = app, pair, wait
        #: False until a starting node has its peer's decisions (or waited `wait`):
        #: until then its track script says dead, so it cannot become active.
        self.ready = False
        #: This node has decisions the peer has not confirmed.
        self.out_of_date = False
        self._applying = False
        #: Counts this node's changes, so one made while an exchange is on its way is sent after it.
        self._changes = 0
        self._wake = asyncio.Event()
        #: (this node's digest, the peer's) at the last exchange: not repeated while both stay.
        self._exchanged: tuple[str, str | None] | None = None
        self._error: str | None = None
        self._task: asyncio.Task[None] | None = None
        pair.status_parts.append(lambda: {"decisions": digest(self.stored())})
        pair.listeners.append(self._on_peer)

    @property
    def push_timeout(self) -> float:
        """How long a push may take (the peer settles its workers before answering): the
        pair's `ha.peer_timeout`, which its status calls take too."""
        return self.pair.timeout

    # --- what this node holds -----------------------------------------------------------

    def stored(self) -> Decisions:
        store = self.app.store
        found: Decisions = {(SERVER, service, server): Decision(row.state, row.changed_at, row.changed_by)
                            for (service, server), row in store.server_states().items()}
        for (service, pool), (flag, at) in store.failover_latches().items():
            found[(LATCH, service, pool)] = Decision(str(flag).lower(), at)
        return found

    def snapshot(self) -> Decisions:
        return shared(self.stored(), self.pair.role())

    @property
    def peer_digest(self) -> str | None:
        found = self.pair.state.answer.get("decisions")
        return found if isinstance(found, str) else None

    @property
    def in_sync(self) -> bool:
        """The peer answers, has every decision of this node, and routes alike."""
        return self.pair.state.up and not self.out_of_date and self.peer_digest == digest(self.stored())

    # --- sending ---------------------------------------------------------------------

    def changed(self) -> None:
        """An operator state or a latch changed here: push it (not while taking the peer's)."""
        if self._applying:
            return
        self._changes += 1
        self.out_of_date = True
        self._wake.set()

    def _on_peer(self, pair: PairSync) -> None:
        """After each status the watcher got: push when the peer lacks something."""
        if not pair.state.up or not self.ready:
            return
        now = (digest(self.stored()), self.peer_digest)
        if self.out_of_date or (now[0] != now[1] and now != self._exchanged):
            self.out_of_date = True
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        await self._catch_up()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.out_of_date:
                await self.exchange()

    async def _catch_up(self) -> None:
        """At start: take the peer's decisions (and give it this node's) before this node
        may become active; an unreachable peer is waited for `wait` seconds at most."""
        self.out_of_date = True  # until the peer has answered once
        deadline, taken = time.monotonic() + self.wait, False
        while not taken and (left := deadline - time.monotonic()) > 0:
            taken = await self.exchange(min(self.push_timeout, left))
            if not taken:
                await asyncio.sleep(min(RETRY_EVERY, max(0.0, deadline - time.monotonic())))
        if not taken:
            log.warning("ha_decisions_not_taken", peer=self.pair.peer.name, waited=self.wait, error=self._error,
                        result="this node runs its own stored decisions; the watcher sends them when the peer "
                               "answers")
        self.ready = True

    async def exchange(self, timeout: float | None = None) -> bool:
        """Send this node's decisions, take what the peer answers with; True when done.
        `timeout`: `push_timeout` unless given."""
        self.out_of_date = True
        sent, mine = self._changes, self.snapshot()
        try:
            status, answer = await self.pair.client.call(
                "POST", "/decisions", {"node": self.pair.node.name, "decisions": to_wire(mine)},
                self.push_timeout if timeout is None else timeout)
            if status != 200 or not isinstance(answer, dict):
                raise PeerUnreachable.answered(self.pair.peer.name, status, answer)
            theirs = from_wire(answer.get("decisions"))
        except (PeerUnreachable, ValueError) as exc:
            if self._error != str(exc):
                log.warning("ha_decisions_not_sent", peer=self.pair.peer.name, error=str(exc))
            self._error = str(exc)
            return False
        await self.take(self.pair.peer.name, theirs)
        self._error = None
        self.out_of_date = self._changes != sent
        self._exchanged = (digest(self.stored()), answer.get("digest") if isinstance(answer.get("digest"), str)
                           else None)
        return True

    # --- taking the peer's --------------------------------------------------------------

    async def take(self, peer: str, theirs: Decisions) -> int:
        """Store, audit and apply the peer's decisions that win; return once the workers
        route by them. How many were taken."""
        winners = to_take(self.stored(), theirs)
        if not winners:
            return 0
        app, who = self.app, f"peer:{peer}"
        self._applying = True
        try:
            for (kind, service, subject), decision in sorted(winners.items()):
                target = f"{service}/{subject}"
                if kind == SERVER:
                    app.store.save_server_state(service, subject, decision.value, decision.changed_by,
                                                decision.changed_at)
                    app.audit(who, "set_state", target, {"to": decision.value, "by": decision.changed_by,
                                                         "changed_at": decision.changed_at})
                    self._apply_state(service, subject, decision)
                else:
                    app.store.save_failed_over(service, subject, decision.value == "true", decision.changed_at)
                    app.audit(who, "failover_latch", target, {"to": decision.value, "changed_at": decision.changed_at})
                    if service in app.runtime.services:
                        app.runtime.apply(SetFailedOver(service, subject, decision.value == "true"))
        finally:
            self._applying = False
        log.event("ha_decisions_taken", peer=peer, count=len(winners))
        await app.settle()
        return len(winners)

    def _apply_state(self, service: str, server: str, decision: Decision) -> None:
        try:
            target = self.app.runtime.server(service, server)
        except NotFound:
            return  # not configured here: the row waits, as a stored state does
        self.app.runtime.apply(SetState(service, server, decision.value, who=decision.changed_by))  # type: ignore[arg-type]
        target.state_changed_at = decision.changed_at


@sync_routes
def _decision_routes(routes: APIRouter, control: Control) -> None:
    @routes.post("/decisions")
    async def take(request: Request, peer: str = Depends(sync_caller)) -> dict[str, Any]:
        """Take the peer's decisions that win over this node's; answer with this node's
        (so the peer takes the ones that win over its own) once the workers route by them."""
        sync = control.decisions
        if sync is None:
            raise SyncRefused(503, "this node's decision sync has not started yet")
        try:
            body = await request.json()
            theirs = from_wire(body.get("decisions") if isinstance(body, dict) else None)
        except ValueError as exc:
            raise SyncRefused(400, f"not a set of decisions: {exc}") from None
        taken = await sync.take(peer, theirs)
        return {"node": sync.pair.node.name, "taken": taken, "decisions": to_wire(sync.snapshot()),
                "digest": digest(sync.stored())}
