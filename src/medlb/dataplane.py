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
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
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


class DataPlane(Protocol):
    async def prepare(self, plan: "ReloadPlan", base_dir: Path | None) -> Prepared:
        """Do everything for `plan` that can fail, changing nothing that serves; raise
        `Refused` (having undone it) if something cannot be done."""
