"""The disruptions: every few seconds one of kill -9 a server (started again a few
seconds later), halt or drain a server through the API (online again later), or reload
medlb (SIGHUP or POST /api/v1/reload, in turn) with the other valid config or, now and
then, with one that must be refused.

At most one server per service is out (killed, halted or drained) at any time, so every
service always has two servers that can take work: a client failure is then never "no
server left", and each one can be traced to the one server that was out. `pick` is the
pure decision; `Chaos` does it and writes down what happened, and checks that medlb did
what it said (a refused reload changed nothing, a state change took).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.soak.estate import Estate, service_name

#: Relative odds of each action when every kind is possible.
ODDS = {"kill": 4, "halt": 2, "drain": 2, "reload": 4}
#: Every this many reloads, one with a file that must be refused (a schema error and a
#: port that is taken, in turn); the others alternate between the two valid files.
REFUSED_EVERY = 3
SIGHUP, POST = "SIGHUP", "POST /api/v1/reload"
#: A port can stay taken for a while after a SIGKILL (a forked storescp child finishing
#: its association): try again, waiting longer each time, then report the peer as lost.
RESTART_TRIES = 4


@dataclass
class Outage:
    """A server killed at `killed_at` and running again from `restarted_at` (None: never)."""

    service: str
    server: str
    killed_at: float
    restarted_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Log:
    """What the chaos loop did and what it found."""

    actions: list[dict[str, Any]] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    reloads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "refused": 0})
    #: Broken promises of medlb's control plane: a refused reload that changed something,
    #: a valid one refused, an invalid one taken, a state change that did not take.
    broken: list[str] = field(default_factory=list)
    #: The harness's own trouble (a peer that would not start again): reported, not blamed on medlb.
    harness: list[str] = field(default_factory=list)

    def note(self, kind: str, target: str, result: str) -> None:
        self.actions.append({"at": time.monotonic(), "kind": kind, "target": target, "result": result})

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for action in self.actions:
            counted[action["kind"]] = counted.get(action["kind"], 0) + 1
        return counted


def pick(rng: random.Random, out: dict[str, str | None], service_of: dict[str, str]) -> tuple[str, str | None]:
    """The next action and its server: only servers of services with nothing out yet."""
    busy = {service_of[name] for name, why in out.items() if why}
    candidates = sorted(name for name in out if service_of[name] not in busy)
    kinds = [kind for kind in ODDS if candidates or kind == "reload"]
    kind = rng.choices(kinds, [ODDS[k] for k in kinds])[0]
    return kind, (rng.choice(candidates) if kind != "reload" else None)


class Chaos:
    def __init__(self, estate: Estate, client: httpx.AsyncClient, log: Log, every: float, seed: int = 1):
        assert estate.medlb is not None
        self.estate, self.medlb, self.client, self.log, self.every = estate, estate.medlb, client, log, every
        self.rng = random.Random(seed)
        self.out: dict[str, str | None] = {name: None for name in estate.peers}
        self.service_of = {name: service_name(peer.mode) for name, peer in estate.peers.items()}
        self.due: list[tuple[float, str]] = []  # (when, server) to bring back
        self.variant = 0
        self.reload_count = 0
        self.refused_count = 0

    async def run(self, until: float) -> None:
        """Act every `every` seconds (with jitter) until `until`, then bring everything back."""
        next_action = time.monotonic() + self.every
        returning: set[asyncio.Task[None]] = set()  # a restart can take seconds: the cadence holds
        while time.monotonic() < until:
            now = time.monotonic()
            for when, name in sorted(self.due):
                if when <= now:
                    self.due.remove((when, name))
                    task = asyncio.create_task(self.bring_back(name))
                    returning.add(task)
                    task.add_done_callback(returning.discard)
            if now >= next_action:
                kind, name = pick(self.rng, self.out, self.service_of)
                try:
                    await self.act(kind, name)
                except Exception as exc:  # a harness bug must show in the table, not end the run
                    self.log.harness.append(f"{kind} {name or ''}: {type(exc).__name__}: {exc}"[:300])
                next_action = time.monotonic() + self.every * self.rng.uniform(0.5, 1.5)
            await asyncio.sleep(0.1)
        await asyncio.gather(*returning, *(self.bring_back(name) for _, name in sorted(self.due)))
        self.due.clear()

    async def act(self, kind: str, name: str | None) -> None:
        if kind == "reload":
            self.reload_count += 1
            if self.reload_count % REFUSED_EVERY:
                await self.reload(None, SIGHUP if self.reload_count % 2 else POST)
            else:  # each kind of refusal by each way of reloading, in turn
                self.refused_count += 1
                await self.reload("schema" if self.refused_count % 2 else "bind",
                                  SIGHUP if self.refused_count // 2 % 2 else POST)
        elif kind == "kill":
            assert name is not None
            peer = self.estate.peers[name]
            self.out[name] = "killed"
            self.log.outages.append(Outage(self.service_of[name], name, time.monotonic()))
            await asyncio.to_thread(peer.kill)
            self.log.note("kill -9", name, "killed")
            self.due.append((time.monotonic() + self.rng.uniform(4, 10), name))
        else:
            assert name is not None
            if await self.set_state(name, kind):
                self.out[name] = kind
                self.due.append((time.monotonic() + self.rng.uniform(3, 8), name))

    async def bring_back(self, name: str) -> None:
        if self.out[name] == "killed":
            await self.restart(name)
        elif self.out[name] in ("halt", "drain") and await self.set_state(name, "online"):
            self.out[name] = None

    async def restart(self, name: str) -> None:
        peer = self.estate.peers[name]
        for attempt in range(1, RESTART_TRIES + 1):
            try:
                await asyncio.wait_for(asyncio.to_thread(peer.start), 40)
            except Exception as exc:  # a port in use, a peer that exits: report, try again, never hang
                self.log.note("restart", name, f"failed (try {attempt}): {type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(2 ** attempt)
                continue
            outage = next(o for o in reversed(self.log.outages) if o.server == name)
            outage.restarted_at = time.monotonic()
            self.out[name] = None
            self.log.note("restart", name, "running")
            return
        self.out[name] = "dead"  # its service gets no more chaos: one server out at a time
        self.log.harness.append(f"{name} did not start again after {RESTART_TRIES} tries; "
                                f"its service ran on two servers from then on")

    async def set_state(self, name: str, state: str) -> bool:
        service = self.service_of[name]
        try:
            response = await self.client.post(f"/api/v1/services/{service}/servers/{name}/state",
                                              json={"state": state})
            shown = response.json().get("server", {}).get("state") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            self.log.note(state, name, f"API error: {type(exc).__name__}: {exc}"[:200])
            self.log.broken.append(f"POST {state} for {service}/{name} failed: {type(exc).__name__}: {exc}"[:300])
            return False
        if shown != state:
            self.log.note(state, name, f"answered {response.status_code}")
            self.log.broken.append(f"POST {state} for {service}/{name} answered {response.status_code}: "
                                   f"{response.text[:200]}")
            return False
        self.log.note(state, name, "done")
        return True

    # --- reloads ---------------------------------------------------------------------

    async def reload(self, refused_kind: str | None, method: str) -> None:
        before = await self._running()
        if refused_kind is None:
            self.variant = 1 - self.variant
            self.medlb.write_config(self.estate.config(self.variant))
        else:
            self.medlb.write_config(self.estate.refused_config(self.variant, refused_kind))
        try:
            result = await (self._sighup() if method == SIGHUP else self._post_reload())
        finally:
            if refused_kind is not None:  # the valid file goes back at once
                self.medlb.write_config(self.estate.config(self.variant))
        what = f"{'valid' if refused_kind is None else refused_kind + '-invalid'} config by {method}"
        self.log.note("reload", what, result)
        if result in ("ok", "refused"):
            self.log.reloads[result] += 1
        expected = "ok" if refused_kind is None else "refused"
        if result != expected:
            self.log.broken.append(f"reload of a {what}: expected {expected}, got {result}")
        after = await self._running()
        if before is None or after is None:
            self.log.broken.append(f"reload of a {what}: the API did not show the servers before and after")
            return
        weights = {key: weight for key, (weight, _) in after.items()}
        if result == "refused":  # a refused reload changes nothing
            wanted = {key: weight for key, (weight, _) in before.items()}
        else:
            wanted = {(service, name): weight for (service, name) in after
                      for server, weight in self.estate.weights(self.variant).items() if server == name}
        differ = [f"{s}/{n} weight {wanted.get((s, n))} -> {w}" for (s, n), w in sorted(weights.items())
                  if wanted.get((s, n)) != w]
        differ += [f"{s}/{n} is {state}, an operator set {self.out[n]}" for (s, n), (_, state) in sorted(after.items())
                   if self.out.get(n) in ("halt", "drain") and state != self.out[n]]
        if set(after) != set(before) and result == "refused":
            differ.append(f"servers {sorted(set(before) ^ set(after))} came or went")
        if differ:
            change = "changed the running system" if result == "refused" else "left the system unlike its file"
            self.log.broken.append(f"reload of a {what} ({result}) {change}: {'; '.join(differ)}")

    async def _running(self) -> dict[tuple[str, str], tuple[int, str]] | None:
        """(service, server) -> (weight, operator state), as the API shows them."""
        try:
            response = await self.client.get("/api/v1/services")
            response.raise_for_status()
            return {(found["name"], server["name"]): (server["weight"], server["state"])
                    for found in response.json() for server in found["servers"]}
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    async def _post_reload(self) -> str:
        try:
            response = await self.client.post("/api/v1/reload")
        except httpx.HTTPError as exc:
            return f"API error: {type(exc).__name__}: {exc}"[:200]
        return {200: "ok", 422: "refused"}.get(response.status_code, f"answered {response.status_code}")

    async def _sighup(self) -> str:
        """Signal, then read the outcome from the audit log (the one place SIGHUP answers)."""
        newest = await self._newest_reload()
        if newest is None:
            return "API error: no audit log"
        self.medlb.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            entry = await self._newest_reload()
            if entry is not None and entry.get("id", 0) > newest.get("id", 0):
                return str(entry.get("detail", {}).get("result", "unknown"))
        return "no audit entry within 30 s"

    async def _newest_reload(self) -> dict[str, Any] | None:
        try:
            response = await self.client.get("/api/v1/audit", params={"limit": 20, "q": "reload"})
            response.raise_for_status()
            entries = [e for e in response.json() if e.get("action") == "reload"]
        except (httpx.HTTPError, ValueError):
            return None
        return entries[0] if entries else {"id": 0}
