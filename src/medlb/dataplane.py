"""The contract every data plane keeps for a (re)load: prepare, then commit or discard.

A new config reaches the running system in two phases, so that a config one part
cannot take changes nothing anywhere:

1. `Runtime.plan` builds the new model beside the live one (pure, see runtime/model.py).
2. Each data plane `prepare`s everything that can fail for that model: it binds every
   new listen address (keeping the sockets of addresses that stay or move between
   services), loads certificates, and with workers has every worker prepare too. A
   data plane that cannot raises `Refused`, having undone only what it did itself.
3. If every data plane prepared, the runtime commits the plan and each data plane
   commits (which cannot fail); otherwise each one that prepared discards. A discard
   closes only the sockets its preparation opened: the live model, the listeners,
   the store and the published changes are as they were.

The layer 7 listeners (one process), the worker processes and, later, the kernel rules
and the peer of a clustered pair are data planes behind this one contract.

Between reloads a data plane follows the runtime model: it subscribes `on_changes` to
the runtime and reacts to each list of `Change`s (a halted server with `on_halt: close`
loses its connections; the workers pass the decided state on to every worker). It
keeps its established connections in one registry, a set of `Connection`s, which the
idle sweep, on_halt and a stop go through without knowing the mode of any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from medlb.runtime import Change, Server
    from medlb.runtime.model import ReloadPlan


class Refused(Exception):
    """A data plane cannot take a config; it changed nothing. One reason per problem;
    `not_answered` names the workers whose silence is the reason (they may be stuck)."""

    def __init__(self, *reasons: str, not_answered: Sequence[int] = ()):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)
        self.not_answered = list(not_answered)


class Prepared(Protocol):
    """A data plane's side of a plan, ready to go live."""

    async def commit(self) -> list[int]:
        """Go live; cannot fail. Returns the workers that did not confirm within the
        settle time (they take the change when they run again), empty when all did."""

    async def discard(self) -> None:
        """Undo the preparation; the running data plane is as before."""


@runtime_checkable
class Connection(Protocol):
    """One established client connection of any mode, as its data plane's registry
    holds it (from admission until it has been released)."""

    #: The real server it is relayed to; None before one is picked, and for modes
    #: that spread one connection's messages over many servers (mllp).
    server: "Server | None"

    def close(self) -> None:
        """End it now, letting what is already buffered go out."""

    def abort(self) -> None:
        """End it at once, both sides (on_halt: close, or the stop timeout passed)."""

    def shutdown(self) -> None:
        """medlb is stopping: take no new request or message, and close once what has
        been taken is answered. A byte relay has no such boundary and runs on."""

    def idle_check(self, now: float) -> None:
        """The registry's periodic sweep at loop time `now`: close past idle_timeout
        (or the mode's own deadlines) since the last sign of life."""


#: The registry a data plane keeps of its established connections.
Connections = set[Connection]


@runtime_checkable
class DataPlane(Protocol):
    def on_changes(self, changes: "list[Change]") -> None:
        """Follow the runtime model (subscribed with `Runtime.subscribe`): act on what
        changed in the data plane's running connections and routing."""

    async def stop(self, timeout: float) -> int:
        """Stop accepting, let established connections finish for up to `timeout`
        seconds, abort the rest; how many were aborted."""

    async def prepare(self, plan: "ReloadPlan", base_dir: Path | None) -> Prepared:
        """Do everything for `plan` that can fail, changing nothing that serves; raise
        `Refused` (having undone it) if something cannot be done."""


class _AllPrepared:
    def __init__(self, prepared: Sequence[Prepared]):
        self.prepared = list(prepared)

    async def commit(self) -> list[int]:
        not_answered: list[int] = []
        for prepared in self.prepared:
            not_answered += await prepared.commit()
        return not_answered

    async def discard(self) -> None:
        for prepared in reversed(self.prepared):
            await prepared.discard()


class AllOf:
    """Several data planes as one (the relay and the kernel): a plan is prepared by all
    or by none, so one that refuses leaves the others as they were. Each plane
    subscribes to the runtime itself; this only sequences prepare and stop."""

    def __init__(self, *planes: DataPlane):
        self.planes = planes

    def on_changes(self, changes: "list[Change]") -> None:
        return None

    async def prepare(self, plan: "ReloadPlan", base_dir: Path | None) -> Prepared:
        prepared: list[Prepared] = []
        try:
            for plane in self.planes:
                prepared.append(await plane.prepare(plan, base_dir))
        except BaseException:
            for done in reversed(prepared):
                await done.discard()
            raise
        return _AllPrepared(prepared)

    async def stop(self, timeout: float) -> int:
        """In order: the relays drain their connections first, then the kernel stops."""
        aborted = 0
        for plane in self.planes:
            aborted += await plane.stop(timeout)
        return aborted
