"""The live model: services, pools, servers, their state, health and counters.

No I/O happens here. The proxies ask `Runtime.pick` for a server and bump plain integer
counters on it; health checks and operators change it only through events
(`Runtime.apply`), which return the `Change` records the layers above log and audit.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

from medlb.config.models import Config, DicomConfig, PoolConfig, ServerConfig, ServiceConfig, SourceIpPersistence
from medlb.runtime.dicom import DicomRouter, DicomStats
from medlb.runtime.events import STATES, Change, CheckResult, Event, Failback, SetFailedOver, SetState
from medlb.runtime.histogram import LATENCY_BUCKETS, Histogram
from medlb.runtime.persistence import StickTable, client_key
from medlb.runtime.schedulers import Scheduler, make_scheduler, rendezvous_score
from medlb.runtime.stats import HttpStats, MllpStats

Tier = Literal["primary", "backup", "none"]
_uids = itertools.count(1)


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
        self._active = value
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

    def refresh(self) -> list[Change]:
        """Recompute the active tier after anything that changes availability.

        A manual-failback pool that went to the backup stays there while the backup
        can serve; if the backup fails too and a primary can serve, the primary takes
        over again (serving beats staying put).
        """
        primary_ok = any(s.available for s in self.primary)
        backup_ok = any(s.available for s in self.backup)
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
            changes.append(Change("pool", self.service, self.name, old_tier, tier, reason=self._why(tier)))
        if self.failed_over != old_flag:
            changes.append(Change("failed_over", self.service, self.name, str(old_flag).lower(),
                                  str(self.failed_over).lower()))
        return changes

    def _why(self, tier: Tier) -> str:
        if tier == "backup":
            if self.failed_over and any(s.available for s in self.primary):
                return "failback is manual: staying on the backup until an operator fails back"
            return "no primary server is online and up"
        if tier == "none":
            return "no server is online and up"
        return "a primary server is online and up"

    def fail_back(self) -> list[Change]:
        """Leave the backup for the primaries (if any can serve); nothing if not failed over."""
        if not self.failed_over:
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
        servers = pool.tier_servers(tier)
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
        candidates = [s for s in servers if s.available and s.weight > 0 and s not in exclude]
        if not candidates and exclude and tier == "primary":
            tier = "backup"
            candidates = [s for s in pool.backup if s.available and s.weight > 0 and s not in exclude]
        if not candidates:
            return None
        scheduler = self._schedulers.get((pool_name, tier))
        if scheduler is None:
            scheduler = self._schedulers[(pool_name, tier)] = make_scheduler(self.config.scheduler)
        if key is None and self.config.scheduler == "source":
            key = client_key(client_ip)
        server = scheduler.pick(candidates, key)
        if sticky is not None and server is not None and key is not None:
            sticky.put(key, server.name, now)  # type: ignore[arg-type]
        return server


    def cookie_value(self, server: Server) -> str:
        """The persistence cookie's value for a server: opaque (a hash of the service and
        server names, never an address), and stable across restarts and reloads."""
        return hashlib.sha256(f"medlb\0{self.name}\0{server.name}".encode()).hexdigest()[:20]

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


class Runtime:
    """All services, by name. Reads are plain attribute access; changes go through apply."""

    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self._listeners: list[Callable[[list[Change]], None]] = []

    def subscribe(self, callback: Callable[[list[Change]], None]) -> None:
        self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[list[Change]], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def publish(self, changes: list[Change]) -> list[Change]:
        """Tell the subscribers; used directly only by a worker copying decided state."""
        return self._publish(changes)

    def _publish(self, changes: list[Change]) -> list[Change]:
        if changes:
            for callback in self._listeners:
                callback(changes)
        return changes

    # --- config --------------------------------------------------------------------

    def load(self, config: Config) -> list[Change]:
        """Build the model from config, keeping state, health and counters of every
        server that keeps its service and name (and health too if its address stays)."""
        old_servers = {(s.service, s.name): s for service in self.services.values() for s in service.servers()}
        services: dict[str, Service] = {}
        changes: list[Change] = []
        for service_config in config.services:
            pools = {}
            for pool_name, pool_config in service_config.all_pools().items():
                pools[pool_name] = self._build_pool(service_config, pool_name, pool_config, old_servers)
            services[service_config.name] = Service(service_config, pools)
            old = self.services.get(service_config.name)
            if old is not None:
                changes += self._carry_over(old, services[service_config.name])
        self.services = services
        return self._publish(changes)

    def _build_pool(self, service: ServiceConfig, pool_name: str, pool: PoolConfig,
                    old_servers: dict[tuple[str, str], Server]) -> Pool:
        def build(config: ServerConfig, backup: bool) -> Server:
            server = old_servers.get((service.name, config.name))
            address = (config.address.host, config.address.port)
            if server is not None and (server.host, server.port) != address:
                fresh = Server(service.name, pool_name, config.name, *address)
                fresh.state, fresh.state_changed_at, fresh.state_changed_by = (
                    server.state, server.state_changed_at, server.state_changed_by)
                fresh.health_changes = server.health_changes
                server = fresh
            elif server is None:
                server = Server(service.name, pool_name, config.name, *address)
            if service.health.type == "none":
                server.health, server.checked, server.health_reason = "up", True, "no health check configured"
            server.pool, server.weight, server.backup, server.ae_title = (
                pool_name, config.weight, backup, config.ae_title)
            return server

        primary = [build(s, False) for s in pool.servers]
        backup = [build(s, True) for s in pool.backup]
        return Pool(service.name, pool_name, service.failback, primary, backup)

    @staticmethod
    def _carry_over(old: Service, new: Service) -> list[Change]:
        changes: list[Change] = []
        # Shared, not copied: connections accepted before the reload still count down
        # the same counters when they end.
        new.counters = old.counters
        if old.mllp_stats is not None and new.mllp_stats is not None:
            new.mllp_stats = old.mllp_stats
        if old.http_stats is not None and new.http_stats is not None:
            new.http_stats = old.http_stats
        if old.sticky is not None and new.sticky is not None:
            new.sticky._entries = old.sticky._entries
        if old.dicom is not None and new.dicom is not None:
            new.dicom = old.dicom
        for name, pool in new.pools.items():
            old_pool = old.pools.get(name)
            if old_pool is not None:
                pool.failed_over = old_pool.failed_over and pool.failback == "manual"
                pool.active = old_pool.active
            changes += pool.refresh()
        return changes

    # --- events --------------------------------------------------------------------

    def apply(self, event: Event) -> list[Change]:
        if isinstance(event, CheckResult):
            return self._publish(self._check_result(event))
        if isinstance(event, SetState):
            return self._publish(self._set_state(event))
        if isinstance(event, Failback):
            return self._publish(self._failback(event))
        if isinstance(event, SetFailedOver):
            service = self._service(event.service)
            pool = service.pools.get(event.pool)
            if pool is None or pool.failback != "manual":
                return []
            pool.failed_over = event.failed_over
            return self._publish(pool.refresh())
        raise TypeError(f"unknown event {event!r}")

    def _service(self, name: str) -> Service:
        service = self.services.get(name)
        if service is None:
            raise KeyError(f"no service named {name!r}")
        return service

    def _server(self, service_name: str, server_name: str) -> tuple[Service, Server]:
        service = self._service(service_name)
        server = service.server(server_name)
        if server is None:
            raise KeyError(f"service {service_name!r} has no server named {server_name!r}")
        return service, server

    def _set_state(self, event: SetState) -> list[Change]:
        if event.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        service, server = self._server(event.service, event.server)
        if server.state == event.state:
            return []
        old = server.state
        server.state, server.state_changed_at, server.state_changed_by = event.state, time.time(), event.who
        if event.state == "halt" and service.sticky is not None:
            service.sticky.forget_server(server.name)
        changes = [Change("state", service.name, server.name, old, event.state, who=event.who)]
        return changes + service.pools[server.pool].refresh()

    def _check_result(self, event: CheckResult) -> list[Change]:
        try:
            service, server = self._server(event.service, event.server)
        except KeyError:
            return []  # the server left with a reload while its check ran
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
        return changes + service.pools[server.pool].refresh()

    def _failback(self, event: Failback) -> list[Change]:
        service = self._service(event.service)
        if event.pool is not None and event.pool not in service.pools:
            raise KeyError(f"service {service.name!r} has no pool named {event.pool!r}")
        pools = [service.pools[event.pool]] if event.pool else list(service.pools.values())
        changes: list[Change] = []
        for pool in pools:
            for change in pool.fail_back():
                changes.append(Change(change.kind, change.service, change.subject, change.old, change.new,
                                      change.reason, who=event.who))
        return changes
