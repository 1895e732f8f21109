"""Wires config to runtime: owns the event loop, the store, signals and reload.

Every operator action goes through here, in one order: check the target exists,
store it, write the audit entry, then change the runtime. So an acknowledged action
is on disk, and a crash between the steps can only leave a stored action that has
not yet taken effect (it does on the next start), never the reverse.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from medlb import descriptors, logs
from medlb.notify import notifier
from medlb.config import ConfigError, LoadedConfig, Problem, load_config
from medlb.config.loader import parse_config
from medlb.config.models import L4_MODES, Config, HaNode
from medlb.atomic import write_atomically
from medlb.control import ConfigHook, Listener, PendingReload, ReloadResult
from medlb.dataplane import AllOf, DataPlane, Prepared, Refused
from medlb.health import HealthManager
from medlb.ha import node as ha_node
from medlb.ha import handover
from medlb.ha.splitbrain import Episode
from medlb.ha.channel import PairSync, read_sync_token
from medlb.ha.configsync import Bundle, ConfigSync, PeerRefused
from medlb.ha.decisions import DecisionSync
from medlb.ha.sticky import StickySync
from medlb.ha.generation import ConfigGeneration
from medlb.ha.supervisor import PairNode
from medlb.kernel.host import addresses, local_addresses
from medlb.kernel.plane import KernelPlane
from medlb.proxy.listeners import Listeners
from medlb.runtime import Change, Conflict, Failback, NotFound, Runtime, Server, Service, SetFailedOver, SetState
from medlb.runtime.describe import describe_change
from medlb.runtime.model import ReloadPlan
from medlb.store import Store
from medlb.tasks import spawn
from medlb.workers import Workers

log = logs.get_logger("medlb")

#: How keepalived starts `python -m medlb ha-alive`. keepalived resolves the script's
#: first word to its real path, and a virtual environment's python is a symlink: run
#: by its real path, it is no longer the venv's and cannot import medlb. Through env,
#: the venv's path is what is executed.
TRACK_SCRIPT_PYTHON = ["/usr/bin/env", sys.executable]


class StartError(Exception):
    """medlb cannot start; the message says why, for the operator."""


class App:
    """Implements medlb.control.Control for the admin side, which it starts but does
    not look into: sessions, tokens, live streams and history are admin/'s."""

    def __init__(self, config_path: str | Path, log_format: str | None = None, log_level: str | None = None,
                 node: str | None = None, state_dir: str | Path | None = None):
        self.config_path = Path(config_path)
        #: `medlb run --node` and `--state-dir`: what differs between the two nodes of a
        #: pair that share one file (and, in tests, one host).
        self.node_name = node
        self.state_dir_override = Path(state_dir).absolute() if state_dir is not None else None
        self.log_format = log_format
        self.log_level = log_level
        self.runtime = Runtime()
        self.listeners = Listeners(self.runtime)
        #: With `workers` > 1 the data plane runs in worker processes and `listeners` stays empty.
        self.workers: Workers | None = None
        #: The layer 4 services (l4-dr, l4-nat), forwarded by the kernel's nftables.
        self.kernel = KernelPlane(self.runtime)
        self.health = HealthManager(self.runtime)
        self.health.verify = self.kernel.verify
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=2000)
        self.reloads = {"ok": 0, "failed": 0}
        self.started_at = time.time()
        self.loaded: LoadedConfig
        self.store: Store
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._admin: Any = None
        #: This node of the clustered pair (`ha:`), None for a lone medlb.
        self.pair: PairNode | None = None
        #: The pair's sync channel (token, peer client, peer watcher), with `pair`.
        self.pair_sync: PairSync | None = None
        #: The operator decisions shared with the peer, with `pair_sync`.
        self.decisions: DecisionSync | None = None
        #: Source-IP persistence entries copied to the passive node, with `pair_sync`.
        self.sticky: StickySync | None = None
        #: Which config this node runs (generation, hash), for the peer to compare.
        self.generation: ConfigGeneration | None = None
        #: Config changes made on both nodes or neither (with `pair_sync`).
        self.config_sync: ConfigSync | None = None
        #: Told every change and audit entry (the admin side's live streams).
        self._listeners: list[Listener] = []
        #: Take part in every reload (the admin side's tokens).
        self._config_hooks: list[ConfigHook] = []
        self.runtime.subscribe(self._on_changes)

    # --- life cycle ------------------------------------------------------------------

    def _load(self) -> LoadedConfig:
        """A config medlb can run as written: a setting this release cannot honour (a
        mode, TLS, a check type) is refused rather than ignored, since ignoring `tls`
        would send patient data in clear."""
        return self._runnable(load_config(self.config_path, local_hosts=local_addresses()))

    def _runnable(self, loaded: LoadedConfig) -> LoadedConfig:
        if loaded.warnings:
            raise ConfigError(loaded.source, loaded.warnings)
        if self.state_dir_override is not None:
            config = loaded.config.model_copy(update={"state_dir": str(self.state_dir_override)})
            loaded = dataclasses.replace(loaded, config=config)
        return loaded

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Before anything runs: a stop asked for while starting is honoured once started,
        # rather than killing a half-started node by the signal's default action.
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        self.loaded = self._load()
        config = self.loaded.config
        logs.setup(self.log_level or config.log.level, self.log_format or config.log.format)
        raise_open_files_limit()
        log_advisories(self.loaded)
        pair_node = self._pair_node(config)  # refuse a host that is neither node before anything runs
        sync_token = read_sync_token(self.loaded) if pair_node is not None else ""
        if config.admin is not None:
            from medlb.admin.server import AdminServer

            try:
                self._admin = AdminServer(self)  # reads the token files: refuse to start before anything runs
            except OSError as exc:
                raise StartError(f"cannot read an admin token_file: {exc.strerror}") from None
        self.store = Store(self.loaded.state_dir)
        if config.workers > 1:
            self.workers = Workers(self.runtime, config.workers)
            await self.workers.start()
        plan = self.runtime.plan(config)
        try:
            prepared = await self._prepare_data_plane(plan, self.loaded)
        except Refused as exc:
            if self.workers is not None:
                await self.workers.stop(0)
            raise StartError(str(exc)) from None
        self.runtime.commit(plan)
        self._restore_stored()
        await prepared.commit()
        self.health.base_dir = self.loaded.base_dir
        self.health.sync()
        if self._admin is not None:
            assert config.admin is not None
            try:
                await self._admin.start(config.admin.listen)
            except OSError as exc:
                await self._data_plane_stop(0)
                raise StartError(f"the admin API cannot listen on {config.admin.listen}: {exc.strerror}") from None
        if pair_node is not None:
            await self._start_pair(pair_node, sync_token)
        loop.add_signal_handler(signal.SIGHUP, lambda: spawn(self.reload("signal:SIGHUP")))
        log.event("started", config=str(self.config_path), services=len(config.services),
                  admin=str(config.admin.listen) if config.admin else "off", state_dir=str(self.loaded.state_dir))
        notifier.started(self)  # READY=1 for systemd once the first checks have run

    def _pair_node(self, config: Config) -> HaNode | None:
        """This node of the pair: `--node`, or the one whose address this host has."""
        if config.ha is None:
            return None
        try:
            local = [] if self.node_name else [item.ip for found in addresses().values() for item in found]
            node = ha_node.choose(config.ha, self.node_name, local)
        except (ha_node.NodeUnknown, OSError, subprocess.SubprocessError) as exc:
            raise StartError(f"the clustered pair: {exc}") from None
        log.event("ha_node", node=node.name, address=str(node.address), priority=node.priority)
        return node

    async def _start_pair(self, node: HaNode, sync_token: str) -> None:
        """keepalived for this node, once the data plane serves (its track script asks),
        and the sync channel to the peer."""
        ha, admin = self.loaded.config.ha, self.loaded.config.admin
        assert ha is not None and admin is not None  # the loader refuses a pair without admin:
        self.pair = pair = PairNode(ha, node, self.loaded.state_dir, TRACK_SCRIPT_PYTHON + ["-m", "medlb"],
                                    self._data_plane_problem, self._on_role,
                                    on_split_brain=self._on_split_brain)
        self.generation = ConfigGeneration.under(self.loaded.state_dir, Bundle.of(self.loaded).hash)
        # The sync timings are read here, once: a reload that changes them logs
        # ha_needs_restart, as for the rest of ha:.
        self.pair_sync = PairSync(node, pair.peer, admin.listen.port or 9443, sync_token, self.loaded.state_dir,
                                  lambda: pair.role, self.generation.current,
                                  check_interval=ha.peer_check_interval, timeout=ha.peer_timeout)
        self.on_config(self.pair_sync.prepare)
        self.config_sync = ConfigSync(self, self.pair_sync, self.generation, ha.config_sync_timeout)
        self.decisions = DecisionSync(self, self.pair_sync, ha.decisions_wait)
        self.sticky = StickySync(self, self.pair_sync)
        # Each node tells its last split brain; the other records it if it saw none of it.
        self.pair_sync.status_parts.append(
            lambda: {"split_brain": None if pair.last_split_brain is None else pair.last_split_brain.as_dict()})
        self.pair_sync.listeners.append(
            lambda sync: pair.peer_told(sync.state.answer.get("split_brain")) if sync.state.up else None)
        try:
            await self.pair.start()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            await self.pair.close()
            self.pair = None
            await self._data_plane_stop(0)
            if self._admin is not None:
                await self._admin.stop()
            raise StartError(f"the clustered pair cannot start keepalived: {exc}") from None
        self.pair_sync.start()
        self.decisions.start()
        self.sticky.start()

    def _data_plane_problem(self) -> str | None:
        """Why this node cannot serve the VIPs now (keepalived's track script asks), or None."""
        if self.workers is not None and not any(worker.alive for worker in self.workers.procs):
            return "no data-plane worker is running"
        if self.decisions is not None and not self.decisions.ready:
            return "taking the peer's operator decisions first (ha.decisions_wait)"
        return None

    def _on_role(self, old: str, new: str) -> None:
        assert self.pair is not None
        fields = {"node": self.pair.node.name, "old": old, "new": new, "vips": [str(v) for v in self.pair.ha.vips]}
        (log.event if new in ("MASTER", "BACKUP") else log.warning)("ha_role_changed", **fields)
        self.audit("keepalived", "ha_role", self.pair.node.name, {"from": old, "to": new})

    def _on_split_brain(self, episode: Episode) -> None:
        assert self.pair is not None
        detail = episode.as_dict()
        log.warning("ha_split_brain", node=self.pair.node.name, peer=self.pair.peer.name, **detail)
        self.audit("keepalived", "ha_split_brain", self.pair.node.name, detail)

    @property
    def relay(self) -> DataPlane:
        """Where connections are relayed: the worker processes, or this process's listeners."""
        return self.workers or self.listeners

    @property
    def data_plane(self) -> DataPlane:
        """The relay and the kernel, which a (re)load prepares together."""
        return AllOf(self.relay, self.kernel)

    async def _prepare_data_plane(self, plan: ReloadPlan, loaded: LoadedConfig) -> Prepared:
        """Have the data plane prepare for a planned config (see medlb/dataplane.py);
        raises Refused, with nothing changed, if it cannot."""
        if self.workers is not None:
            settings = loaded.config.log  # the command line's --log-* win over the file, as here
            self.workers.log_settings = (self.log_level or settings.level, self.log_format or settings.format)
        return await self.data_plane.prepare(plan, loaded.base_dir)

    async def _data_plane_stop(self, timeout: float) -> int:
        return await self.data_plane.stop(timeout)

    async def collect(self) -> None:
        """Bring counters up to date before they are read (workers count in their own processes)."""
        if self.workers is not None:
            await self.workers.collect()
        await self.kernel.collect()

    async def settle(self) -> list[int]:
        """Return once every worker routes by the latest operator states and health, so an
        answered API action is in force everywhere; or, after the settle time, the
        workers that have not confirmed it yet."""
        await self.kernel.settle()
        if self.workers is None:
            return []
        not_answered = await self.workers.settle()
        if not_answered:
            log.warning("workers_not_settled", version=self.workers.version, workers=not_answered)
        return not_answered

    def _restore_stored(self) -> None:
        """Operator states and manual failovers from before the restart."""
        self._apply_stored_states()
        for service, pool in self.store.failed_over_pools():
            if service in self.runtime.services:
                self.runtime.apply(SetFailedOver(service, pool, True))

    def _apply_stored_states(self) -> None:
        """The store holds every operator state that is not online; a server that
        (re)appears in the config takes its stored state."""
        for (service, server), stored in self.store.server_states().items():
            try:
                target = self.runtime.server(service, server)
            except NotFound:
                continue  # a server no longer configured keeps its row in case it returns
            if target.state == stored.state:
                continue
            self.runtime.apply(SetState(service, server, stored.state, who=stored.changed_by))  # type: ignore[arg-type]
            target.state_changed_at = stored.changed_at

    @property
    def reload_lock(self) -> asyncio.Lock:
        """Held by a reload from start to end (and, on the pair's passive node, from a
        prepare received from the active one to its commit)."""
        return self._reload_lock

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        await self.start()
        await self._stop.wait()
        await self.stop()

    async def stop(self) -> None:
        timeout = self.loaded.config.stop_timeout
        active = self.listeners.count_connections()
        if self.workers is not None:
            await self.workers.collect()
            active = self.workers.count_connections()
        log.event("stopping", active_connections=active, stop_timeout=timeout)
        if self.sticky is not None and self.pair is not None and self.pair.role == "MASTER":
            await self.sticky.push()  # the last entries, while the peer is still passive and takes them
        if self.pair is not None:
            try:
                await self.pair.release()  # the peer takes the VIPs before this node drains
            except Exception as exc:  # noqa: BLE001 - the drain must happen whatever keepalived did
                log.error("ha_release_failed", error=str(exc))
        left = await self._data_plane_stop(timeout)
        if self.decisions is not None:
            await self.decisions.stop()
        if self.sticky is not None:
            await self.sticky.stop()
        if self.pair_sync is not None:
            await self.pair_sync.stop()
        if self.pair is not None:
            await self.pair.close()
        await self.health.stop()
        if self._admin is not None:
            await self._admin.stop()
        self.store.close()
        log.event("stopped", aborted_connections=left)

    # --- medlb.control.Control: what the admin side reads and follows ---------------

    @property
    def services(self) -> Mapping[str, Service]:
        return self.runtime.services

    def service(self, name: str) -> Service:
        return self.runtime.service(name)

    def server(self, service: str, name: str) -> Server:
        return self.runtime.server(service, name)

    @property
    def health_errors(self) -> Mapping[tuple[str, str, str], int]:
        return self.health.errors

    async def l4_view(self, service: str, flows: bool = True) -> dict[str, Any]:
        found = self.runtime.service(service)
        if not self.kernel.serves(service):
            if found.mode in L4_MODES:
                raise NotFound(f"service {service!r} ({found.mode}) is not in the kernel: "
                               f"{self.kernel.error or 'it has not been programmed yet'}")
            raise NotFound(f"service {service!r} is mode {found.mode}, not a kernel layer 4 service")
        return await self.kernel.view(service, flows)

    async def l4_counters(self) -> dict[str, Any]:
        return await self.kernel.metric_counts()

    async def ha_view(self) -> dict[str, Any] | None:
        if self.pair is None:
            return None
        view = await self.pair.view()
        if self.pair_sync is not None and self.generation is not None:
            view["peer"] = {**view["peer"], **self.pair_sync.view()}
            view["config"] = self.config_sync.view() if self.config_sync is not None else None
            config = "config in sync with the peer" if self.pair_sync.config_in_sync else "config NOT in sync with the peer"
            decisions = "operator decisions not known yet"
            if self.decisions is not None:
                view["peer"]["decisions_in_sync"] = self.decisions.in_sync
                decisions = ("operator decisions in sync" if self.decisions.in_sync
                             else "operator decisions NOT in sync")
            view["sync"] = f"config generation {self.generation.generation}, {config}; {decisions}"
        if self.sticky is not None:
            view["persistence_sync"] = self.sticky.view()
        return view

    async def ha_hand_over(self, action: str, who: str, source: str = "") -> dict[str, Any]:
        """`release` or `takeover` (medlb.ha.handover), audited before it runs."""
        if self.pair is None:
            raise NotFound("this medlb is not a node of a pair: its config has no ha: section")
        why = handover.refusal(self.pair, action)
        if why is not None:
            raise Conflict(why)
        self.audit(who, f"ha_{action}", self.pair.node.name, {"role": self.pair.role}, source)
        outcome = await (handover.release if action == "release" else handover.takeover)(self.pair)
        (log.event if outcome.done else log.warning)(f"ha_{action}_done", who=who, **outcome.as_dict())
        return outcome.as_dict()

    def worker_views(self) -> list[dict[str, Any]] | None:
        return None if self.workers is None else [worker.view() for worker in self.workers.procs]

    def audit_entries(self, limit: int, before_id: int | None, search: str) -> list[dict[str, Any]]:
        return self.store.audit_entries(limit, before_id, search)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_config(self, hook: ConfigHook) -> None:
        self._config_hooks.append(hook)

    def publish(self, message: dict[str, Any]) -> None:
        """Tell the subscribers (the admin side's live streams) what happened."""
        for listener in self._listeners:
            listener(message)

    def audit(self, who: str, action: str, target: str, detail: dict[str, Any] | None = None,
              source: str = "") -> int:
        entry = self.store.audit(who, action, target, detail, source)
        self.publish({"type": "audit", "id": entry, "who": who, "action": action, "target": target})
        return entry

    # --- operator actions ------------------------------------------------------------

    def set_state(self, service: str, server: str, state: str, who: str, source: str = "") -> list[Change]:
        """Raises NotFound for a service or server the config does not have."""
        target = self.runtime.server(service, server)
        self.store.save_server_state(service, server, state, who)
        self.audit(who, "set_state", f"{service}/{server}",
                         {"from": target.state, "to": state}, source)
        return self.runtime.apply(SetState(service, server, state, who))  # type: ignore[arg-type]

    def set_pool_state(self, service: str, pool: str, tier: str, state: str, who: str,
                       source: str = "") -> list[Change]:
        """Set every server of a pool's tier (primary or backup) at once: halting the
        primary tier is the manual failover to the secondary cluster. Stored server by
        server and audited as one action, before the runtime changes."""
        found = self.runtime.service(service)
        target = found.pools.get(pool)
        if target is None:
            raise NotFound(f"service {service!r} has no pool named {pool!r}")
        servers = target.tier_servers(tier)  # type: ignore[arg-type]
        if not servers:
            raise NotFound(f"pool {pool!r} of service {service!r} has no {tier} servers")
        for server in servers:
            self.store.save_server_state(service, server.name, state, who)
        self.audit(who, "set_pool_state", f"{service}/{pool}/{tier}",
                   {"to": state, "servers": {s.name: s.state for s in servers}}, source)
        changes: list[Change] = []
        for server in servers:
            changes += self.runtime.apply(SetState(service, server.name, state, who))  # type: ignore[arg-type]
        return changes

    def failback(self, service: str, who: str, pool: str | None = None, source: str = "") -> list[Change]:
        """Raises NotFound for a service or pool the config does not have, and Conflict,
        with the reason, auditing nothing, when no pool asked would leave its backup."""
        found = self.runtime.service(service)
        if pool is not None and pool not in found.pools:
            raise NotFound(f"service {service!r} has no pool named {pool!r}")
        refusals = found.failback_refusals(pool)
        if len(refusals) == (1 if pool else len(found.pools)):
            raise Conflict("; ".join(refusals.values()) if len(refusals) == 1 else
                           "; ".join(f"pool {name}: {reason}" for name, reason in refusals.items()))
        detail = {"not_failed_back": refusals} if refusals else {}
        self.audit(who, "failback", service if pool is None else f"{service}/{pool}", detail, source)
        return self.runtime.apply(Failback(service, pool, who))

    async def reload(self, who: str, source: str = "") -> ReloadResult:
        """Re-read the config file and make it live everywhere, or nowhere: on any
        problem (the file, an address, a certificate, a worker, the pair's other node)
        keep running the old config exactly as it was."""
        async with self._reload_lock:
            return await self._reload_locked(who, source)

    async def _reload_locked(self, who: str, source: str) -> ReloadResult:
        try:
            loaded = self._load()
        except ConfigError as exc:
            return self._reload_failed(who, source, exc.problems)
        sync = self.config_sync
        bundle = sync.bundle(loaded) if sync is not None else None
        if sync is not None and bundle is not None:
            conflict = sync.edit_refusal(bundle, by_signal=who.startswith("signal:"))
            if conflict is not None:
                return self._edit_refused(who, source, conflict)
        try:
            pending = await self.prepare_reload(loaded)
        except ConfigError as exc:
            return self._reload_failed(who, source, exc.problems)
        except Refused as exc:
            return self._reload_failed(who, source, [Problem("services", None, reason) for reason in exc.reasons],
                                       exc.not_answered)
        if sync is None or bundle is None:
            return await self.commit_reload(pending, who, source)
        generation = sync.next_generation(bundle)
        try:
            peer = await sync.prepare_peer(bundle, generation)
        except PeerRefused as exc:
            await pending.prepared.discard()
            result = self._reload_failed(who, source, [Problem("ha", None, f"the peer {exc.peer} refused: {problem}")
                                                       for problem in exc.problems])
            result.refused_by = exc.peer
            return result
        result = await self.commit_reload(pending, who, source, generation)
        result.peer = await sync.commit_peer(peer, generation)
        return result

    def load_text(self, text: str) -> LoadedConfig:
        """A config as `_load` reads it, from text the pair's other node sent (read
        with its files, which are already in place)."""
        return self._runnable(parse_config(text, str(self.config_path), self.config_path.resolve().parent,
                                           read_files=True, local_hosts=local_addresses()))

    async def prepare_reload(self, loaded: LoadedConfig) -> PendingReload:
        """Everything of a reload that can fail, with nothing live changed: the admin
        side's hooks and the data plane prepare. Raises ConfigError or Refused."""
        commits = [hook(loaded) for hook in self._config_hooks]
        plan = self.runtime.plan(loaded.config)
        prepared = await self._prepare_data_plane(plan, loaded)
        return PendingReload(loaded, plan, prepared, commits)

    async def commit_reload(self, pending: PendingReload, who: str, source: str = "",
                            generation: tuple[int, str] | None = None) -> ReloadResult:
        """Make a prepared config live (this cannot fail); `generation`: the pair's
        (generation, hash) it becomes."""
        loaded = pending.loaded
        old_config = self.loaded.config
        self.runtime.commit(pending.plan)
        self._apply_stored_states()
        not_answered = await pending.prepared.commit()
        self.health.base_dir = loaded.base_dir
        self.health.sync()
        self.loaded = loaded
        if self.generation is not None and generation is not None:
            self.generation.commit(*generation)
        for commit in pending.commits:
            commit()
        self.reloads["ok"] += 1
        if old_config.admin != loaded.config.admin and old_config.admin is not None and loaded.config.admin \
                and old_config.admin.listen != loaded.config.admin.listen:
            log.warning("admin_listen_needs_restart", listen=str(loaded.config.admin.listen))
        if old_config.admin is not None and loaded.config.admin is not None \
                and old_config.admin.tls != loaded.config.admin.tls:
            log.warning("admin_tls_needs_restart")  # users, roles, timeouts apply at once
        if old_config.workers != loaded.config.workers:
            log.warning("workers_needs_restart", workers=loaded.config.workers, running=old_config.workers)
        if old_config.state_dir != loaded.config.state_dir:
            log.warning("state_dir_needs_restart", state_dir=loaded.config.state_dir)
        if old_config.ha != loaded.config.ha:
            log.warning("ha_needs_restart", reason="keepalived runs with the ha: section medlb started with")
        detail: dict[str, Any] = {"result": "ok", "services": sorted(self.runtime.services)}
        if not_answered:
            detail["workers_not_answered"] = not_answered
        if generation is not None:
            detail["generation"] = generation[0]
        self.audit(who, "reload", str(self.config_path), detail, source)
        log.event("reloaded", who=who, services=len(self.runtime.services))
        log_advisories(loaded)
        notifier.reloaded()
        return ReloadResult([], not_answered)

    async def apply_config(self, text: str, who: str, source: str = "") -> ReloadResult:
        """Write a file over the config file and reload; a refused reload puts the old
        file back. The previous file is kept beside it as FILE.previous. The passive
        node of a pair refuses, writing nothing."""
        if self.config_sync is not None:
            conflict = self.config_sync.edit_refusal(None, by_signal=False)
            if conflict is not None:
                return self._edit_refused(who, source, conflict)
        path = self.config_path
        old = path.read_text(encoding="utf-8")
        path.with_name(path.name + ".previous").write_text(old, encoding="utf-8")
        write_atomically(path, text, path.stat().st_mode & 0o777)
        result = await self.reload(who, source)
        if result.problems or result.conflict:
            path.write_text(old, encoding="utf-8")
        return result

    def _edit_refused(self, who: str, source: str, conflict: str) -> ReloadResult:
        """The passive node of a pair changes nothing: said, audited and logged."""
        self.audit(who, "reload", str(self.config_path), {"result": "refused", "reason": conflict}, source)
        log.warning("reload_refused", who=who, reason=conflict)
        return ReloadResult(conflict=conflict)

    def _reload_failed(self, who: str, source: str, problems: list[Problem],
                       not_answered: list[int] | None = None) -> ReloadResult:
        self.reloads["failed"] += 1
        self.audit(who, "reload", str(self.config_path),
                   {"result": "refused", "problems": [str(p) for p in problems]}, source)
        log.error("reload_refused", who=who, problems=len(problems), first=str(problems[0]) if problems else "")
        notifier.reload_refused(problems)
        return ReloadResult(problems, not_answered or [])

    # --- changes from the runtime -------------------------------------------------------

    def _on_changes(self, changes: list[Change]) -> None:
        for change in changes:
            service = self.runtime.services.get(change.service)
            record = {"at": time.time(), **change.as_dict(),
                      "text": describe_change(change, service is not None and len(service.pools) > 1)}
            self.events.append(record)
            fields = {"service": change.service, change_subject(change): change.subject,
                      "old": change.old, "new": change.new}
            if change.reason:
                fields["reason"] = change.reason
            if change.who != "system":
                fields["who"] = change.who
            level = log.warning if change.new in ("down", "none", "backup") else log.event
            level(f"{change.kind}_changed", **fields)
            self.publish({"type": "change", **record})
            if change.kind == "failed_over" and hasattr(self, "store"):
                self.store.save_failed_over(change.service, change.subject, change.new == "true")
            if change.kind in ("state", "failed_over") and self.decisions is not None:
                self.decisions.changed()  # the peer carries them too


def raise_open_files_limit() -> None:
    """Raise the soft descriptor limit to the hard one before anything is opened;
    workers started later inherit it. One line says what it was and is."""
    before, after = descriptors.raise_open_files_limit()
    hard = descriptors.open_files_limit()[1]
    fields = {"from": before, "to": after, "hard": hard}
    (log.event if after == hard else log.warning)("open_files_limit", **fields)


def log_advisories(loaded: LoadedConfig) -> None:
    """What `medlb check` advises about the running file, in the log too."""
    for advisory in loaded.advisories:
        log.warning("config_advisory", path=advisory.path, line=advisory.line, advice=advisory.message)


def change_subject(change: Change) -> str:
    return "pool" if change.kind in ("pool", "failed_over") else "server"
