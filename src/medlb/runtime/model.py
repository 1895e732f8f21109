"""The live model: services, pools, servers, their state, health and counters.

No I/O happens here. The proxies ask `Runtime.pick` for a server and bump plain integer
counters on it; health checks and operators change it only through events
(`Runtime.apply`), which return the `Change` records the layers above log and audit.
A new config is planned beside the live model (`Runtime.plan`, writing nothing the
running system reads) and goes live only with `Runtime.commit`, once every data plane
has prepared for it (medlb/dataplane.py).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterator, Literal

from medlb.config.models import Config, DicomConfig, ServerConfig, ServiceConfig, SourceIpPersistence
from medlb.runtime.dicom import DicomRouter, DicomStats
from medlb.runtime.httpsettings import HttpSettings
from medlb.runtime.events import STATES, Change, CheckResult, Event, Failback, SetFailedOver, SetState
from medlb.runtime.histogram import LATENCY_BUCKETS, Histogram
from medlb.runtime.persistence import StickTable, client_key
from medlb.runtime.schedulers import Scheduler, make_scheduler, rendezvous_score
from medlb.runtime.stats import HttpStats, MllpStats

Tier = Literal["primary", "backup", "none"]
_uids = itertools.count(1)


class NotFound(KeyError):
    """A service, server or pool the live model does not have (the API answers 404).
    A KeyError, so that callers that look names up in dicts can treat both alike."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Conflict(Exception):
    """An action the live model cannot carry out as asked, with the reason in the
    operator's words; nothing changed (the API answers 409)."""


class SharedCount:
    """One process's cell for a count every worker keeps (workers/board.py), and the
    cells of the other workers for the same thing. Each cell has one writer."""

    __slots__ = ("board", "cell", "other_cells")

    def __init__(self, board: Any, cell: int, other_cells: tuple[int, ...]):
        self.board, self.cell, self.other_cells = board, cell, other_cells

    def write(self, value: int) -> None:
        self.board[self.cell] = value

    def others(self) -> int:
        board = self.board
        return sum(board[cell] for cell in self.other_cells)


@dataclass
class LastCheck:
    ok: bool
    reason: str
    latency: float
    at: float


@dataclass(eq=False)
class Server:
    """One real server. Identity (eq/hash) is the object: a reload that keeps the
    server keeps this object, so connections in flight count against the right one."""

    service: str
    pool: str
    name: str
    host: str
    port: int | None
    weight: int = 1
    backup: bool = False
    ae_title: str | None = None
    state: str = "online"
    health: str = "up"
    #: False until the first check result: that result sets health at once, later ones
    #: need `rise` or `fall` in a row.
    checked: bool = False
    health_reason: str = "not checked yet"
    health_changed_at: float = field(default_factory=time.time)
    state_changed_at: float = field(default_factory=time.time)
    state_changed_by: str = "config"
    last_check: LastCheck | None = None
    ok_streak: int = 0
    fail_streak: int = 0
    checks_ok: int = 0
    checks_failed: int = 0
    health_changes: int = 0
    #: The last change of any kind (state or health) and when: "reason for last change".
    last_change: Change | None = None
    last_change_at: float = 0.0
    # counters, bumped by the proxies
    _active: int = 0
    total: int = 0
    bytes_to_server: int = 0
    bytes_to_client: int = 0
    connect_failures: int = 0
    # message-level modes (mllp): messages sent and waiting for their ACK
    messages: int = 0
    in_flight: int = 0
    #: C-ECHO round trips of dicom-echo checks; created with the first one.
    echo_latency: Histogram | None = None
    uid: int = field(default_factory=lambda: next(_uids))
    #: With workers: this server's cells in the shared table of open connections.
    shared: SharedCount | None = None

    @property
    def active(self) -> int:
        """Connections this process has open to the server."""
        return self._active

    @active.setter
    def active(self, value: int) -> None:
        self.add_active(value - self._active)

    def add_active(self, change: int) -> None:
        """`active += change` in one call instead of the property's two (mode http
        counts each request in and out)."""
        self._active = value = self._active + change
        if self.shared is not None:
            self.shared.write(value)

    @property
    def cluster_active(self) -> int:
        """Connections every worker together has open to the server (leastconn's measure)."""
        shared = self.shared
        return self._active if shared is None else self._active + shared.others()

    @property
    def hash_seed(self) -> bytes:
        """Stable across restarts and reloads, so source hashing keeps clients in place."""
        return self.name.encode()[:64]

    @property
    def available(self) -> bool:
        """May take new work: online and up."""
        return self.state == "online" and self.health == "up"

    @property
    def keeps_persistent(self) -> bool:
        """May take clients persisted to it: drain still honours persistence, halt not."""
        return self.state != "halt" and self.health == "up"

    def address_for(self, local_port: int) -> tuple[str, int]:
        return self.host, self.port if self.port is not None else local_port

    def display_address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@lru_cache(maxsize=1024)
def _cookie_value(service: str, server: str) -> str:
    """Service.cookie_value, computed once per (service, server) pair rather than per
    response: http mode sets the cookie on every answer to a client without it."""
    return hashlib.sha256(f"medlb\0{service}\0{server}".encode()).hexdigest()[:20]


def _takes_work(server: Server) -> bool:
    return server.available


class Pool:
    """Primary servers and a backup (secondary) cluster that serves only when no
    primary can. With failback manual, once on the backup the pool stays there until
    an operator fails back."""

    def __init__(self, service: str, name: str, failback: str, primary: list[Server], backup: list[Server]):
        self.service = service
        self.name = name
        self.failback = failback
        self.primary = primary
        self.backup = backup
        self.failed_over = False
        self.active: Tier = "primary"
        self.refresh()

    def servers(self) -> Iterator[Server]:
        yield from self.primary
        yield from self.backup

    def tier_servers(self, tier: Tier) -> list[Server]:
        return self.primary if tier == "primary" else self.backup if tier == "backup" else []

    def refresh(self, available: Callable[[Server], bool] | None = None) -> list[Change]:
        """Recompute the active tier after anything that changes availability.

        A manual-failback pool that went to the backup stays there while the backup
        can serve; if the backup fails too and a primary can serve, the primary takes
        over again (serving beats staying put). `available` answers for a server
        instead of its own flags (a reload plan asks what its settings would give).
        """
        available = available or _takes_work
        primary_ok = any(available(s) for s in self.primary)
        backup_ok = any(available(s) for s in self.backup)
        old_tier, old_flag = self.active, self.failed_over
        tier: Tier
        if self.failback == "manual" and self.failed_over and backup_ok:
            tier = "backup"
        elif primary_ok:
            tier, self.failed_over = "primary", False
        elif backup_ok:
            tier, self.failed_over = "backup", self.failback == "manual"
        else:
            tier = "none"
        self.active = tier
        changes: list[Change] = []
        if tier != old_tier:
            changes.append(Change("pool", self.service, self.name, old_tier, tier,
                                  reason=self._why(tier, primary_ok)))
        if self.failed_over != old_flag:
            changes.append(Change("failed_over", self.service, self.name, str(old_flag).lower(),
                                  str(self.failed_over).lower()))
        return changes

    def _why(self, tier: Tier, primary_ok: bool) -> str:
        if tier == "backup":
            if self.failed_over and primary_ok:
                return "failback is manual: staying on the backup until an operator fails back"
            return "no primary server is online and up"
        if tier == "none":
            return "no server is online and up"
        return "a primary server is online and up"

    def failback_refusal(self) -> str | None:
        """Why a failback would change nothing, or None when it would leave the backup."""
        if not self.failed_over:
            return "not failed over: nothing to fail back"
        if not any(_takes_work(s) for s in self.primary):
            return "no primary server is online: staying on the backup cluster"
        return None

    def fail_back(self) -> list[Change]:
        """Leave the backup for the primaries; nothing (no flag flipped off and on again)
        while it is not failed over or no primary can serve."""
        if self.failback_refusal() is not None:
            return []
        self.failed_over = False
        return [Change("failed_over", self.service, self.name, "true", "false")] + self.refresh()


@dataclass
class ServiceCounters:
    """Client-side counters of a service; one object lives across reloads."""

    active: int = 0
    total: int = 0
    refused: int = 0
    no_server: int = 0
    #: Refused because the process had reached its connection ceiling (descriptors).
    descriptor_refused: int = 0


def _counter(name: str) -> property:
    return property(lambda self: getattr(self.counters, name),
                    lambda self, value: setattr(self.counters, name, value))


def _active_get(service: "Service") -> int:
    return service.counters.active


def _active_set(service: "Service", value: int) -> None:
    service.counters.active = value
    if service.shared is not None:
        service.shared.write(value)


class Service:
    active = property(_active_get, _active_set)
    total = _counter("total")
    refused = _counter("refused")
    no_server = _counter("no_server")

    def __init__(self, config: ServiceConfig, pools: dict[str, Pool]):
        self.config = config
        self.name = config.name
        self.pools = pools
        self.counters = ServiceCounters()
        #: With workers: the service's cells in the shared table, so max_connections
        #: holds for the sum over all workers.
        self.shared: SharedCount | None = None
        self.sticky: StickTable | None = None
        self.mllp_stats: MllpStats | None = MllpStats() if config.mode == "mllp" else None
        persistence = config.persistence
        if isinstance(persistence, SourceIpPersistence):
            self.sticky = StickTable(persistence.timeout, persistence.max_entries)
        self._schedulers: dict[tuple[str, str], Scheduler] = {}
        self._by_source = config.scheduler == "source"
        #: With workers: round robin's numbering of picks shared by all of them, per
        #: (pool, tier), so the rotation is over every worker together.
        self.cursors: dict[tuple[str, str], Callable[[], int]] = {}
        #: Mode dicom only: routing by AE title, and association counters.
        self.router: DicomRouter | None = None
        self.dicom: DicomStats | None = None
        if config.mode == "dicom":
            self.router = DicomRouter(self.dicom_config)
            self.dicom = DicomStats()
        self._cookies: dict[str, dict[str, Server]] = {}
        #: The listener's TLS terminator (certificates, handshake counters), set by the proxy.
        self.tls: Any = None
        #: Request counters of mode http (runtime.stats.HttpStats).
        self.http_stats: HttpStats | None = HttpStats() if config.mode == "http" else None
        #: Mode http: the config values each request reads, in slots.
        self.http_settings: HttpSettings | None = HttpSettings(config) if config.mode == "http" else None

    @property
    def mode(self) -> str:
        return self.config.mode

    @property
    def cluster_active(self) -> int:
        """Client connections open in every worker together."""
        shared = self.shared
        active = self.counters.active
        return active if shared is None else active + shared.others()

    @property
    def dicom_config(self) -> DicomConfig:
        """The dicom section, or its defaults when the file leaves it out."""
        return self.config.dicom or DicomConfig()

    def servers(self) -> Iterator[Server]:
        for pool in self.pools.values():
            yield from pool.servers()

    def server(self, name: str) -> Server | None:
        return next((s for s in self.servers() if s.name == name), None)

    def failback_refusals(self, pool: str | None = None) -> dict[str, str]:
        """The pools a failback of `pool` (None: every pool) would leave as they are, and why."""
        pools = [self.pools[pool]] if pool else list(self.pools.values())
        return {p.name: reason for p in pools if (reason := p.failback_refusal()) is not None}

    @property
    def active_pool(self) -> Tier:
        return self.pools["default"].active

    def persistence_key(self, client_ip: str) -> bytes:
        persistence = self.config.persistence
        assert isinstance(persistence, SourceIpPersistence)
        return client_key(client_ip, persistence.ipv4_prefix, persistence.ipv6_prefix)

    def pick(self, client_ip: str, exclude: set[Server] | frozenset[Server] = frozenset(),
             pool_name: str = "default", now: float | None = None) -> Server | None:
        """The server for a new connection from client_ip, or None if nothing can serve.

        `exclude` holds servers whose connect already failed for this client; when the
        active tier has no untried server left, the backup is tried before giving up.
        """
        pool = self.pools[pool_name]
        tier = pool.active
        servers = pool.primary if tier == "primary" else pool.tier_servers(tier)
        key: bytes | None = None
        sticky = self.sticky
        if sticky is not None:
            now = time.monotonic() if now is None else now
            key = self.persistence_key(client_ip)
            name = sticky.get(key, now)
            if name is not None:
                for server in servers:
                    if server.name == name and server.keeps_persistent and server not in exclude:
                        sticky.put(key, name, now)
                        return server
        # Server.available written out: this runs for each new connection, or each http request.
        candidates = [s for s in servers
                      if s.state == "online" and s.health == "up" and s.weight > 0 and s not in exclude]
        if not candidates and exclude and tier == "primary":
            tier = "backup"
            candidates = [s for s in pool.backup if s.available and s.weight > 0 and s not in exclude]
        if not candidates:
            return None
        scheduler = self._schedulers.get((pool_name, tier))
        if scheduler is None:
            scheduler = self._schedulers[(pool_name, tier)] = make_scheduler(
                self.config.scheduler, self.cursors.get((pool_name, tier)))
        if key is None and self._by_source:
            key = client_key(client_ip)
        server = scheduler.pick(candidates, key)
        if sticky is not None and server is not None and key is not None:
            sticky.put(key, server.name, now)  # type: ignore[arg-type]
        return server


    def cookie_value(self, server: Server) -> str:
        """The persistence cookie's value for a server: opaque (a hash of the service and
        server names, never an address), and stable across restarts and reloads."""
        return _cookie_value(self.name, server.name)

    def server_for_cookie(self, value: str, pool_name: str = "default") -> Server | None:
        """The server a persistence cookie names, if it may still take its clients: a
        server that is down, halted or gone gives None (the scheduler picks); drain keeps."""
        cookies = self._cookies.get(pool_name)
        if cookies is None:
            cookies = self._cookies[pool_name] = {self.cookie_value(s): s for s in self.pools[pool_name].servers()}
        server = cookies.get(value)
        if server is None or not server.keeps_persistent:
            return None
        return server

    def pick_for_key(self, key: bytes, exclude: set[Server] | frozenset[Server] = frozenset(),
                     pool_name: str = "default") -> Server | None:
        """The server that owns `key` (an HL7 ordering key) by consistent hashing.

        One key keeps its server while that server can take work; when it leaves, only
        its keys move. Servers in `exclude` (already tried for this message) are passed
        over, falling back to the backup tier when the active tier has none left.
        """
        pool = self.pools[pool_name]
        tiers = [pool.active] + (["backup"] if pool.active == "primary" and exclude else [])
        for tier in tiers:
            candidates = [s for s in pool.tier_servers(tier) if s.available and s.weight > 0 and s not in exclude]  # type: ignore[arg-type]
            if candidates:
                return max(candidates, key=lambda server: rendezvous_score(key, server))
        return None


@dataclass(frozen=True)
class ServerSettings:
    """What the config says about one server, written to it when a reload commits: a
    server the reload keeps is the live object, so nothing is written before."""

    pool: str
    weight: int
    backup: bool
    ae_title: str | None
    #: The service has no health check: the server counts as up.
    unchecked: bool

    def apply(self, server: Server) -> None:
        server.pool, server.weight, server.backup, server.ae_title = self.pool, self.weight, self.backup, self.ae_title
        if self.unchecked:
            server.health, server.checked, server.health_reason = "up", True, "no health check configured"

    def available(self, server: Server) -> bool:
        """Whether the server will take new work once these settings are written."""
        return server.state == "online" and (self.unchecked or server.health == "up")


@dataclass(eq=False)
class ReloadPlan:
    """A new model built beside the live one, and what committing it would publish.

    Building it writes nothing the running system reads; dropping it discards it.
    """

    config: Config
    #: The live services it was planned against: only a plan of the live model commits.
    base: dict[str, Service]
    services: dict[str, Service]
    #: Every server of `services`, with the settings commit writes to it.
    settings: dict[Server, ServerSettings]
    #: New server objects for servers whose address changed, and the live server whose
    #: operator state each takes at commit (connections to the old address stay on it).
    successors: dict[Server, Server]
    #: The changes committing would publish if nothing else changed before (health
    #: checks and operators keep working on the live model until then).
    changes: list[Change]


@dataclass(frozen=True)
class Snapshot:
    """The decided state of a model: what the control process decides (operator states,
    health, each pool's tier and failover) and every worker copies, so all of them
    route alike. Plain data: it crosses to the workers pickled."""

    #: (service, server) -> (state, state_changed_by, health, checked, health_reason)
    servers: dict[tuple[str, str], tuple[str, str, str, bool, str]]
    #: (service, pool) -> (active tier, failed_over)
    pools: dict[tuple[str, str], tuple[str, bool]]


class Runtime:
    """All services, by name. Reads are plain attribute access; changes go through
    `apply` (events), `commit` (a new config) or `adopt` (another model's decisions)."""

    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self._listeners: list[Callable[[list[Change]], None]] = []

    def subscribe(self, callback: Callable[[list[Change]], None]) -> None:
        self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[list[Change]], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _publish(self, changes: list[Change]) -> list[Change]:
        if changes:
            for callback in self._listeners:
                callback(changes)
        return changes

    # --- config --------------------------------------------------------------------

    def load(self, config: Config) -> list[Change]:
        """Plan and commit at once: for a config nothing else has to prepare for."""
        return self.commit(self.plan(config))

    def plan(self, config: Config) -> ReloadPlan:
        """The model `config` describes, built without touching the live one. Servers
        that keep their service and name keep their object (connections in flight
        count against it); one whose address changes gets a new object that takes its
        operator state but not its health or connections."""
        live = {(s.service, s.name): s for service in self.services.values() for s in service.servers()}
        settings: dict[Server, ServerSettings] = {}
        successors: dict[Server, Server] = {}

        def build(service: ServiceConfig, pool_name: str, config: ServerConfig, backup: bool) -> Server:
            address = (config.address.host, config.address.port)
            server = live.get((service.name, config.name))
            if server is not None and (server.host, server.port) != address:
                fresh = Server(service.name, pool_name, config.name, *address)
                _take_operator_state(fresh, server)
                successors[fresh] = server
                server = fresh
            elif server is None:
                server = Server(service.name, pool_name, config.name, *address)
            settings[server] = ServerSettings(pool_name, config.weight, backup, config.ae_title,
                                              service.health.type == "none")
            return server

        services: dict[str, Service] = {}
        for service_config in config.services:
            pools = {}
            for pool_name, pool_config in service_config.all_pools().items():
                primary = [build(service_config, pool_name, s, False) for s in pool_config.servers]
                backup = [build(service_config, pool_name, s, True) for s in pool_config.backup]
                pools[pool_name] = Pool(service_config.name, pool_name, service_config.failback, primary, backup)
            services[service_config.name] = Service(service_config, pools)
        changes: list[Change] = []
        for name, service in services.items():
            changes += _carry_tiers(self.services.get(name), service, lambda s: settings[s].available(s))
        return ReloadPlan(config, self.services, services, settings, successors, changes)

    def commit(self, plan: ReloadPlan) -> list[Change]:
        """Make a plan the live model, carrying over from the live model as it is now
        (operator states, health, failovers and counters may have changed since the
        plan was made), and publish what changed."""
        if plan.base is not self.services:
            raise ValueError("this plan was made against a model that is no longer live")
        for fresh, replaced in plan.successors.items():
            _take_operator_state(fresh, replaced)
        for server, settings in plan.settings.items():
            settings.apply(server)
        changes: list[Change] = []
        for name, service in plan.services.items():
            old = self.services.get(name)
            if old is not None:
                _share_counters(old, service)
            changes += _carry_tiers(old, service)
        self.services = plan.services
        return self._publish(changes)

    # --- decided state ---------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What this model has decided, for another model of the same config to adopt."""
        servers = {}
        pools = {}
        for service in self.services.values():
            for server in service.servers():
                servers[(service.name, server.name)] = (server.state, server.state_changed_by, server.health,
                                                        server.checked, server.health_reason)
            for pool in service.pools.values():
                pools[(service.name, pool.name)] = (pool.active, pool.failed_over)
        return Snapshot(servers, pools)

    def adopt(self, snapshot: Snapshot) -> list[Change]:
        """Take another model's decisions (a worker's replica takes the control
        process's); what changed. Operator states go through `apply`, so their side
        effects (a halt forgets persistence, on_halt: close ends connections) happen
        here too; health and tier changes are published as well, so caches keyed on
        them (the HL7 owner of each ordering key) are dropped. Servers and pools this
        model does not have are skipped."""
        applied: list[Change] = []
        changes: list[Change] = []
        for (service_name, server_name), (state, who, health, checked, reason) in snapshot.servers.items():
            try:
                server = self.server(service_name, server_name)
            except NotFound:
                continue
            if server.state != state:
                applied += self.apply(SetState(service_name, server_name, state, who))  # type: ignore[arg-type]
            if server.health != health:
                changes.append(Change("health", service_name, server_name, server.health, health, reason))
            server.health, server.checked, server.health_reason = health, checked, reason
        for (service_name, pool_name), (active, failed_over) in snapshot.pools.items():
            service = self.services.get(service_name)
            pool = service.pools.get(pool_name) if service is not None else None
            if pool is None:
                continue
            if pool.active != active:
                changes.append(Change("pool", service_name, pool_name, pool.active, active))
            if pool.failed_over != failed_over:
                changes.append(Change("failed_over", service_name, pool_name, str(pool.failed_over).lower(),
                                      str(failed_over).lower()))
            pool.active, pool.failed_over = active, failed_over  # type: ignore[assignment]
        return applied + self._publish(changes)

    # --- events --------------------------------------------------------------------

    def apply(self, event: Event) -> list[Change]:
        if isinstance(event, CheckResult):
            return self._publish(self._check_result(event))
        if isinstance(event, SetState):
            return self._publish(self._set_state(event))
        if isinstance(event, Failback):
            return self._publish(self._failback(event))
        if isinstance(event, SetFailedOver):
            service = self.service(event.service)
            pool = service.pools.get(event.pool)
            if pool is None or pool.failback != "manual":
                return []
            pool.failed_over = event.failed_over
            return self._publish(pool.refresh())
        raise TypeError(f"unknown event {event!r}")

    # --- lookups ---------------------------------------------------------------------

    def service(self, name: str) -> Service:
        """The live service `name`; NotFound if the config has none."""
        service = self.services.get(name)
        if service is None:
            raise NotFound(f"no service named {name!r}")
        return service

    def server(self, service: str, name: str) -> Server:
        """The live server `name` of `service` (the one object connections count
        against); NotFound if either is not in the config."""
        server = self.service(service).server(name)
        if server is None:
            raise NotFound(f"service {service!r} has no server named {name!r}")
        return server

    def _set_state(self, event: SetState) -> list[Change]:
        if event.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        server = self.server(event.service, event.server)
        service = self.services[event.service]
        if server.state == event.state:
            return []
        old = server.state
        server.state, server.state_changed_at, server.state_changed_by = event.state, time.time(), event.who
        if event.state == "halt" and service.sticky is not None:
            service.sticky.forget_server(server.name)
        changes = [Change("state", service.name, server.name, old, event.state, who=event.who)]
        server.last_change, server.last_change_at = changes[0], server.state_changed_at
        return changes + service.pools[server.pool].refresh()

    def _check_result(self, event: CheckResult) -> list[Change]:
        try:
            server = self.server(event.service, event.server)
        except NotFound:
            return []  # the server left with a reload while its check ran
        service = self.services[event.service]
        check = service.config.health
        server.last_check = LastCheck(event.ok, event.reason, event.latency, event.at or time.time())
        if event.echo_seconds is not None:
            if server.echo_latency is None:
                server.echo_latency = Histogram(LATENCY_BUCKETS)
            server.echo_latency.observe(event.echo_seconds)
        if event.ok:
            server.checks_ok += 1
            server.ok_streak, server.fail_streak = server.ok_streak + 1, 0
        else:
            server.checks_failed += 1
            server.ok_streak, server.fail_streak = 0, server.fail_streak + 1
        old = server.health
        if not server.checked:
            server.checked = True
            new = "up" if event.ok else "down"
        elif old == "down" and server.ok_streak >= check.rise:
            new = "up"
        elif old == "up" and server.fail_streak >= check.fall:
            new = "down"
        else:
            new = old
        if new == old:
            if server.health_reason == "not checked yet":
                server.health_reason = event.reason
            return []
        server.health, server.health_reason, server.health_changed_at = new, event.reason, time.time()
        server.health_changes += 1
        changes = [Change("health", service.name, server.name, old, new, reason=event.reason,
                          detail={"latency": round(event.latency, 6)})]
        server.last_change, server.last_change_at = changes[0], server.health_changed_at
        return changes + service.pools[server.pool].refresh()

    def _failback(self, event: Failback) -> list[Change]:
        service = self.service(event.service)
        if event.pool is not None and event.pool not in service.pools:
            raise NotFound(f"service {service.name!r} has no pool named {event.pool!r}")
        pools = [service.pools[event.pool]] if event.pool else list(service.pools.values())
        changes: list[Change] = []
        for pool in pools:
            for change in pool.fail_back():
                changes.append(Change(change.kind, change.service, change.subject, change.old, change.new,
                                      change.reason, who=event.who))
        return changes


def _take_operator_state(server: Server, replaced: Server) -> None:
    server.state, server.state_changed_at, server.state_changed_by = (
        replaced.state, replaced.state_changed_at, replaced.state_changed_by)
    server.health_changes = replaced.health_changes
    server.last_change, server.last_change_at = replaced.last_change, replaced.last_change_at


def _share_counters(old: Service, new: Service) -> None:
    """Shared, not copied: connections accepted before the reload still count down the
    same counters when they end."""
    new.counters = old.counters
    if old.mllp_stats is not None and new.mllp_stats is not None:
        new.mllp_stats = old.mllp_stats
    if old.http_stats is not None and new.http_stats is not None:
        new.http_stats = old.http_stats
    if old.sticky is not None and new.sticky is not None:
        new.sticky._entries = old.sticky._entries
    if old.dicom is not None and new.dicom is not None:
        new.dicom = old.dicom


def _carry_tiers(old: Service | None, new: Service,
                 available: Callable[[Server], bool] | None = None) -> list[Change]:
    """Start each of `new`'s pools from the tier and failover its namesake in `old` has,
    and recompute them: the changes against the old tiers. A pool new to the service
    starts afresh, as at start-up, and changes nothing."""
    changes: list[Change] = []
    for name, pool in new.pools.items():
        old_pool = old.pools.get(name) if old is not None else None
        if old_pool is None:
            pool.active, pool.failed_over = "primary", False
            pool.refresh(available)
            continue
        pool.failed_over = old_pool.failed_over and pool.failback == "manual"
        pool.active = old_pool.active
        changes += pool.refresh(available)
    return changes
