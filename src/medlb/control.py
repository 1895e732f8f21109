"""What the admin side may ask of the running medlb, and nothing more.

`App` implements this; `admin/` (the API, the metrics, the history sampler) depends
only on it, so the API is tested against a small fake and neither side imports the
other's class. Every action keeps App's order (check the target exists, store it,
audit it, then change the runtime); a target that does not exist raises runtime.NotFound
with the operator's words, which the API answers with 404.

Later capabilities (unlocking a server, the pair's status and takeover, the kernel
ruleset's view) add their methods here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from medlb.config import LoadedConfig, Problem
from medlb.runtime import Change, Server, Service

if TYPE_CHECKING:
    from medlb.dataplane import Prepared
    from medlb.ha.channel import PairSync
    from medlb.ha.configsync import ConfigSync
    from medlb.runtime.model import ReloadPlan
    from medlb.ha.decisions import DecisionSync
    from medlb.ha.sticky import StickySync

#: Called with each message for the live streams: a runtime change or an audit entry.
Listener = Callable[[dict[str, Any]], None]
#: Checks a config before a reload commits it and returns what makes it live; raises
#: ConfigError, with the problems, to refuse the reload with nothing changed.
ConfigHook = Callable[[LoadedConfig], Callable[[], None]]


@dataclass
class ReloadResult:
    """What a reload did. With problems, or a conflict, it was refused and nothing
    changed."""

    problems: list[Problem] = field(default_factory=list)
    #: Workers that did not answer in time. With problems: they could not prepare the
    #: config, which refused it. Without: the config is live, and they have not yet
    #: confirmed it (each takes it when it runs again).
    not_answered: list[int] = field(default_factory=list)
    #: Why this node takes no edit now (the passive node of a pair: the API's 409).
    conflict: str | None = None
    #: The pair's other node that refused the config (its reasons are the problems).
    refused_by: str | None = None
    #: What became of the pair's other node when the config went live (took it too,
    #: or was unreachable and takes it when it returns).
    peer: str | None = None


@dataclass
class PendingReload:
    """A config prepared everywhere in this process, not yet live: commit or discard."""

    loaded: LoadedConfig
    plan: "ReloadPlan"
    prepared: "Prepared"
    #: What makes the admin side's hooks live with it.
    commits: list[Callable[[], None]]


class Control(Protocol):
    # --- what the API reads -----------------------------------------------------------

    @property
    def config_path(self) -> Path: ...

    @property
    def loaded(self) -> LoadedConfig:
        """The running config (its admin section included)."""

    @property
    def services(self) -> Mapping[str, Service]:
        """The runtime's services, by name: counters are current after `collect()`."""

    def service(self, name: str) -> Service:
        """A service by name; raises runtime.NotFound (the API's 404)."""

    def server(self, service: str, name: str) -> Server:
        """A real server of a service by name; raises runtime.NotFound (the API's 404)."""

    @property
    def events(self) -> Sequence[dict[str, Any]]:
        """Recent runtime changes (health, state, pool), oldest first."""

    @property
    def reloads(self) -> Mapping[str, int]:
        """Reloads by result: ok, failed."""

    @property
    def health_errors(self) -> Mapping[tuple[str, str, str], int]:
        """Checks medlb could not make, by (service, server, errno name)."""

    def worker_views(self) -> list[dict[str, Any]] | None:
        """Each data-plane worker process's view; None when the data plane runs in
        this process (`workers: 1`)."""

    def audit_entries(self, limit: int, before_id: int | None, search: str) -> list[dict[str, Any]]:
        """Stored audit entries, newest first."""

    async def collect(self) -> None:
        """Bring counters up to date before they are read."""

    async def settle(self) -> list[int]:
        """Wait until every worker routes by the latest states; the ones that did not."""

    async def l4_view(self, service: str, flows: bool = True) -> dict[str, Any]:
        """What the kernel does for a layer 4 service (rules, counters, and flows unless
        `flows` is False); NotFound for a service that is not one, or not yet in the kernel."""

    async def l4_counters(self) -> dict[str, Any]:
        """The kernel's counters of every layer 4 service for /metrics, after
        `collect()`: {"error": last programming failure or None, "services": {name:
        {"mode", "servers": {name: {packets, bytes, new_flows, flows}}, "no_server"}}}."""

    @property
    def pair_sync(self) -> "PairSync | None":
        """The pair's sync channel (its token, the peer client and watcher); None for
        a medlb without `ha:`, or before the pair has started."""

    @property
    def config_sync(self) -> "ConfigSync | None":
        """Config changes on both nodes of the pair or neither (the sync routes' side);
        None without `ha:`."""

    @property
    def decisions(self) -> "DecisionSync | None":
        """The operator decisions shared with the peer; None without a pair."""

    @property
    def sticky(self) -> "StickySync | None":
        """Source-IP persistence entries copied to the passive node; None without a pair."""

    async def ha_view(self) -> dict[str, Any] | None:
        """This node of the clustered pair (role, since, peer, VIPs held, keepalived);
        None for a medlb without `ha:`."""

    async def ha_hand_over(self, action: str, who: str, source: str = "") -> dict[str, Any]:
        """`release` (give the VIPs to the peer) or `takeover` (take them), audited;
        the outcome {action, done, role, role_text, text}. Raises NotFound for a medlb
        without `ha:`, Conflict (nothing changed) when it would do nothing."""

    # --- what the API does --------------------------------------------------------------

    def set_state(self, service: str, server: str, state: str, who: str, source: str = "") -> list[Change]: ...

    def set_pool_state(self, service: str, pool: str, tier: str, state: str, who: str,
                       source: str = "") -> list[Change]: ...

    def failback(self, service: str, who: str, pool: str | None = None, source: str = "") -> list[Change]:
        """Leave the backup for the primaries; raises runtime.Conflict (the API's 409),
        auditing nothing, when no pool asked would leave it."""

    async def reload(self, who: str, source: str = "") -> ReloadResult: ...

    async def apply_config(self, text: str, who: str, source: str = "") -> ReloadResult:
        """Write a config file's text over the running one and reload; a refused
        reload puts the old file back."""

    def audit(self, who: str, action: str, target: str, detail: dict[str, Any] | None = None,
              source: str = "") -> int: ...

    # --- how the admin side follows ---------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Be told every runtime change and audit entry, as it happens."""

    def on_config(self, hook: ConfigHook) -> None:
        """Take part in every reload: check the new config, and commit with it."""
